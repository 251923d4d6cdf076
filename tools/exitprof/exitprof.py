#!/usr/bin/env python3
"""Where the microvisor's exit path spends its instructions (docs/performance.md, "Exit path").

Boots a one-core probe slice under QEMU `-icount shift=0` with a TCG plugin (exitprof.c) that
records every guest exit as the sequence of hypervisor instructions from the lower-EL vector to
the ERET, then prints each frequent exit by stage and, with --trace N, exit N instruction by
instruction with its disassembly.

    python3 tools/exitprof/exitprof.py                  # null-hvc, mmio-read, timer-irq
    python3 tools/exitprof/exitprof.py --trace 0        # the most frequent exit, disassembled
    python3 tools/exitprof/exitprof.py --bench timer-irq --functions
    python3 tools/exitprof/exitprof.py --bench ipi --cores 2
    python3 tools/exitprof/exitprof.py --boot           # the boot, reset to first guest entry

Needs gcc (the plugin is built on first use into target/exitprof/), llvm-nm and llvm-objdump.
The plugin takes exits apart by instruction address, so the counts are exact and the same
from run to run; they do not include the guest's own instructions.
"""
import argparse
import bisect
import collections
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
OUT = os.path.join(ROOT, 'target', 'exitprof')
ELF = os.path.join(ROOT, 'target', 'aarch64-unknown-none-softfloat', 'release', 'microvisor')
LOAD = 0x40200000

# Stages of an exit, by the function an instruction belongs to (inlined code counts where it
# was inlined: the ESR decode, the bus lookup and the exit counters are part of the glue).
STAGES = [
    ('vector', ['el2_vectors']),
    ('save', ['el2_save', 'el2_guest_sync_entry', 'el2_guest_irq_entry']),
    ('dispatch', ['el2_dispatch', 'el2_guest_sync', 'el2_guest_irq', 'exits::current',
                  'run::node', 'Node::assigned', 'run::here']),
    ('decode', ['TryFromValue', 'trap::decode', 'trap::data_abort']),
    ('device', ['psci::', 'devices::', 'Uart', 'MmioBus', 'bus::']),
    ('irq', ['irq::', 'gic::acknowledge', 'gic::end_of']),
    ('lr-sync', ['vgic::', 'FnMut', 'memset', 'linked_list_allocator', 'VirtualGic',
                 'list_registers', 'alloc::']),
    ('finish', ['exits::finish', 'exits::attend', 'attention', 'check_shutdown']),
    ('restore', ['el2_restore']),
]


def demangle(name):
    """What llvm-nm -C leaves of a legacy Rust symbol, made readable."""
    name = re.sub(r'::h[0-9a-f]{16}$', '', name)
    for old, new in [('$LT$', '<'), ('$GT$', '>'), ('$u20$', ' '), ('$RF$', '&'), ('..', '::')]:
        name = name.replace(old, new)
    return name[1:] if name.startswith('_<') else name


def symbols():
    out = subprocess.run(['llvm-nm', '-n', '-C', '--defined-only', ELF],
                         capture_output=True, text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split(' ', 2)
        if len(parts) == 3 and parts[1].lower() in 'tw' and not parts[2].startswith('$'):
            syms.append((int(parts[0], 16), demangle(parts[2])))
    syms.sort()
    return [a for a, _ in syms], [n for _, n in syms]


def function_of(table, offset):
    addrs, names = table
    i = bisect.bisect_right(addrs, offset) - 1
    return names[i] if i >= 0 else '?'


def stage_of(name):
    for stage, keys in STAGES:
        if any(k in name for k in keys):
            return stage
    return 'handler glue'


def load_profile(path):
    exits, current = [], None
    with open(path) as f:
        for line in f:
            if line.startswith('exit'):
                fields = line.split()
                guest = int(fields[3]) if len(fields) > 3 else 0
                core = int(fields[4]) if len(fields) > 4 else 0
                current = (int(fields[1]), [], guest, core)
                exits.append(current)
            else:
                current[1].append(int(line, 16))
    exits.sort(key=lambda e: -e[0])
    return exits


def run(args):
    os.makedirs(OUT, exist_ok=True)
    plugin = os.path.join(OUT, 'exitprof.so')
    source = os.path.join(os.path.dirname(__file__), 'exitprof.c')
    if not os.path.exists(plugin) or os.path.getmtime(plugin) < os.path.getmtime(source):
        subprocess.run(['gcc', '-shared', '-fPIC', '-O2', '-o', plugin, source], check=True)
    plan = os.path.join(OUT, 'profile.toml')
    with open(plan, 'w') as f:
        f.write(f'[[slice]]\nname = "bench"\ncores = {args.cores}\nmemory = "{args.memory}"\nkernel = "probe"\n'
                f'cmdline = "heartbeat=0 nvme=0 bench={args.bench}"\n')
    image = os.path.join(OUT, 'profile.img')
    subprocess.run(['cargo', 'xtask', 'image', '--plan', plan, '-o', image], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    profile = os.path.join(OUT, 'profile.txt')
    log = os.path.join(OUT, 'profile.log')
    qemu = ['qemu-system-aarch64', '-M', 'virt,virtualization=on,gic-version=3', '-cpu', 'max',
            '-smp', str(args.cores), '-m', '512M', '-nic', 'none', '-display', 'none', '-monitor', 'none',
            '-serial', 'stdio', '-no-reboot', '-kernel', image,
            '-icount', 'shift=0,sleep=off', '-seed', '1',
            '-plugin', f'{plugin},base={LOAD:#x},out={profile}' + (',boot=1' if args.boot else ''),
            '-d', 'plugin']
    with open(log, 'w') as out:
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            time.sleep(1)
            with open(log) as f:
                text = f.read()
                if 'BENCH done' in text or (args.boot and 'BENCH' in text):
                    break
        proc.send_signal(signal.SIGINT)  # the plugin writes its profile at exit
        proc.wait(timeout=60)
    with open(log) as f:
        for line in f:
            if 'BENCH' in line:
                print(line.rstrip())
    return profile


def report_boot(args, profile):
    """Hypervisor instructions from reset to the first guest entry, by function."""
    table = symbols()
    by_function = collections.Counter()
    with open(profile) as f:
        for line in f:
            offset, count = line.split()
            by_function[function_of(table, int(offset, 16))] += int(count)
    total = sum(by_function.values())
    print(f'\n{total} hypervisor instructions before the first guest entry, by function:')
    for name, n in by_function.most_common(args.top):
        print(f'{n:10}  {n * 100 / total:5.1f}%  {name}')


def report(args, profile):
    table = symbols()
    exits = load_profile(profile)
    shown = [i for i, (count, _, _, _) in enumerate(exits) if count >= args.min_count]
    print(f'\n{len(exits)} distinct exit paths; those that ran at least {args.min_count} times:')
    header = ''.join(f'{s:>9}' for s, _ in STAGES) + f'{"glue":>9}{"total":>9}{"guest":>9}'
    print(f'{"#":>3}{"core":>5}{"runs":>7}  {header}  first handler')
    for i in shown:
        count, seq, guest, core = exits[i]
        by_stage = collections.Counter(stage_of(function_of(table, o)) for o in seq)
        handler = next((function_of(table, o) for o in seq
                        if stage_of(function_of(table, o)) in ('device', 'irq')), '-')
        cells = ''.join(f'{by_stage.get(s, 0):>9}' for s, _ in STAGES)
        short = re.sub(r'microvisor_(kernel|logic)::', '', handler)
        print(f'{i:>3}{core:>5}{count:>7}  {cells}{by_stage.get("handler glue", 0):>9}{len(seq):>9}'
              f'{guest / count:>9.0f}  {short}')
    if args.functions:
        for i in shown:
            count, seq, _, _ = exits[i]
            print(f'\nexit #{i} ({count} runs, {len(seq)} instructions), by function:')
            for name, n in collections.Counter(function_of(table, o) for o in seq).most_common():
                print(f'{n:7}  {name}')
    if args.trace is not None:
        dis = {}
        text = subprocess.run(['llvm-objdump', '-d', '--no-show-raw-insn', ELF],
                              capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            m = re.match(r'\s*([0-9a-f]+):\s+(.*)', line)
            if m:
                dis[int(m.group(1), 16)] = m.group(2).strip()
        count, seq, _, _ = exits[args.trace]
        print(f'\nexit #{args.trace} ({count} runs, {len(seq)} instructions):')
        last = None
        for o in seq:
            name = function_of(table, o)
            if name != last:
                print(f'== {name}')
                last = name
            print(f'  {o:6x}  {dis.get(o, "?")}')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bench', default='null-hvc,mmio-read,timer-irq',
                   help="the probe's bench= list")
    p.add_argument('--cores', type=int, default=1,
                   help="the slice's vCPUs and the node's cores (ipi needs 2)")
    p.add_argument('--profile', help='report on an existing profile instead of running')
    p.add_argument('--min-count', type=int, default=10)
    p.add_argument('--functions', action='store_true', help='each exit by function')
    p.add_argument('--trace', type=int, help='disassemble exit N of the table')
    p.add_argument('--boot', action='store_true',
                   help='profile the boot (reset to the first guest entry) by function instead')
    p.add_argument('--top', type=int, default=40, help='functions shown with --boot')
    p.add_argument('--memory', default='160MiB', help="the slice's RAM (boot-1 of the bench: 64MiB)")
    args = p.parse_args()
    profile = args.profile or run(args)
    (report_boot if args.boot else report)(args, profile)


if __name__ == '__main__':
    sys.exit(main())
