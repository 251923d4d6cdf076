"""Drive one Redfish ComputerSystem the way OpenStack Ironic's conductor does, through `sushy`.

Run by `cargo xtask redfish-check --system ID` and by the integration tests, with the venv that
xtask set up (xtask/src/redfish_tools). Each step prints one line:

    SUSHY <step> ok <key=value ...>
    SUSHY <step> FAIL <reason>

and the script exits 1 at the first failure (2 for a usage error, 0 when every step passed).
The steps run in the order given; with none given, all of them in the order of STEPS.
Every HTTP request and every wait is bounded (--http-timeout, --power-timeout).
"""

import argparse
import logging
import re
import sys
import time

import sushy
from sushy import exceptions

STEPS = [
    "auth-session",
    "auth-basic",
    "inventory",
    "power-off",
    "boot-cd",
    "insert-media",
    "power-on",
    "eject-media",
    "power-cycle",
]

# Ironic's PROCESSOR_INSTRUCTION_SET_MAP (ironic/drivers/modules/redfish/inspect.py).
ARCHITECTURES = {
    "ARM-A32": "arm",
    "ARM-A64": "aarch64",
    "IA-64": "ia64",
    "MIPS32": "mips",
    "MIPS64": "mips64",
    "x86": "i686",
    "x86-64": "x86_64",
}
GIB = 1 << 30
MAC = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


class StepFailed(Exception):
    """A step's check did not hold; the message is the reason printed after FAIL."""


def one_line(text, limit=400):
    """Text squeezed onto one bounded line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report(step, ok, detail=""):
    word = "ok" if ok else "FAIL"
    print(f"SUSHY {step} {word} {one_line(detail)}".rstrip(), flush=True)


def optional(read):
    """What `read()` gives, or None when the resource lacks that link."""
    try:
        return read()
    except exceptions.MissingAttributeError:
        return None


def value(enum_or_str):
    """The Redfish string of a sushy enum member (or the value as it is)."""
    return getattr(enum_or_str, "value", enum_or_str)


class Scenario:
    def __init__(self, args):
        self.args = args
        self._conn = None
        self._system = None

    # -- connections ------------------------------------------------------------------------

    def connect(self, auth):
        return sushy.Sushy(
            self.args.url,
            auth=auth,
            verify=not self.args.insecure,
            read_timeout=self.args.http_timeout,
            connect_timeout=self.args.http_timeout,
            server_side_retries=2,
            server_side_retries_delay=1,
        )

    def system_path(self):
        system = self.args.system
        return system if system.startswith("/") else f"/redfish/v1/Systems/{system}"

    def system(self):
        """The system, through a session-or-basic connection like Ironic's default `auto`."""
        if self._conn is None:
            self._conn = self.connect(
                sushy.auth.SessionOrBasicAuth(self.args.user, self.args.password)
            )
        if self._system is None:
            self._system = self._conn.get_system(self.system_path())
        else:
            self._system.refresh(force=True)
        return self._system

    # -- steps ------------------------------------------------------------------------------

    def step_auth_session(self):
        auth = sushy.auth.SessionAuth(self.args.user, self.args.password)
        conn = self.connect(auth)
        token = auth.get_session_key()
        location = auth.get_session_resource_id()
        if not token:
            raise StepFailed("no X-Auth-Token in the session's answer")
        if not location:
            raise StepFailed("no Location for the new session")
        systems = len(conn.get_system_collection().members_identities)
        auth.close()  # DELETE of the session (sushy only logs a failure)
        basic = self.connect(sushy.auth.BasicAuth(self.args.user, self.args.password))
        left = basic.get_session_service().sessions.members_identities
        if any(m.rstrip("/") == location.rstrip("/") or location.endswith(m.rstrip("/")) for m in left):
            raise StepFailed(f"session {location} still listed after its DELETE")
        return f"session={location} systems={systems} deleted=yes"

    def step_auth_basic(self):
        conn = self.connect(sushy.auth.BasicAuth(self.args.user, self.args.password))
        systems = len(conn.get_system_collection().members_identities)
        return f"systems={systems}"

    def step_inventory(self):
        system = self.system()
        details, problems = [f"system={system.identity}"], []
        # Memory: MemorySummary.TotalSystemMemoryGiB.
        memory = system.memory_summary
        if memory and memory.size_gib:
            details.append(f"memory_gib={memory.size_gib:g}")
        else:
            problems.append("no MemorySummary.TotalSystemMemoryGiB")
        # CPUs: the sum of TotalThreads, the first processor's InstructionSet.
        processors = optional(lambda: system.processors)
        members = processors.get_members() if processors else []
        if members:
            count, _ = processors.summary
            instruction_set = value(members[0].instruction_set)
            arch = ARCHITECTURES.get(instruction_set)
            details.append(f"cpus={count}")
            if arch:
                details.append(f"arch={arch}")
            else:
                problems.append(f"first processor's InstructionSet {instruction_set!r} names no architecture")
        else:
            problems.append("no Processors")
        # Disk: Ironic's _detect_local_gb.
        disk, sizes = self.local_disk(system)
        if sizes:
            local_gb = max(0, int(disk / GIB - 1))
            details += [f"disk_bytes={disk or max(sizes)}", f"local_gb={local_gb}"]
        else:
            problems.append("no disk size in SimpleStorage, Storage Volumes or Drives")
        # NICs: every EthernetInterface's MACAddress (invalid ones ignored, as Ironic does).
        macs, invalid = [], []
        interfaces = optional(lambda: system.ethernet_interfaces)
        if interfaces:
            for eth in interfaces.get_members():
                mac = eth.mac_address or ""
                (macs if MAC.match(mac) else invalid).append(mac.lower() or eth.identity)
        details.append("macs=" + (",".join(macs) or "-"))
        if invalid:
            details.append("invalid_macs=" + ",".join(invalid))
        details.append(f"boot_mode={value(system.boot.mode) or '-'}")
        if problems:
            raise StepFailed("; ".join(problems) + " (inspection fails); read: " + " ".join(details))
        return " ".join(details)

    @staticmethod
    def local_disk(system):
        """(size Ironic picks, every size seen): the smallest disk >= 4 GiB of SimpleStorage
        and of Storage (volumes, else drives); the smaller of the two when both have one."""
        sizes = []

        def first_big(candidates):
            candidates = list(candidates or [])
            sizes.extend(candidates)
            return ([s for s in candidates if s >= 4 * GIB] or [0])[0]

        simple = storage = 0
        try:
            if system.simple_storage:
                simple = first_big(system.simple_storage.disks_sizes_bytes)
        except exceptions.SushyError as e:
            logging.warning("SimpleStorage: %s", e)
        try:
            if system.storage:
                storage = first_big(system.storage.volumes_sizes_bytes)
                if not storage:
                    storage = first_big(system.storage.drives_sizes_bytes)
        except exceptions.SushyError as e:
            logging.warning("Storage: %s", e)
        chosen = min(simple, storage) if simple and storage else max(simple, storage)
        return chosen, sizes

    def set_power(self, reset, target):
        """Ironic's node power action: nothing when already there, else the reset and a wait."""
        system = self.system()
        if system.power_state == target:
            return f"state={value(target)} already=yes"
        system.reset_system(reset)
        return f"state={value(target)} after={self.wait_power(target):.1f}s"

    def wait_power(self, target):
        start = time.monotonic()
        deadline = start + self.args.power_timeout
        while True:
            state = self.system().power_state
            if state == target:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"PowerState still {value(state)} {self.args.power_timeout:g} s after the "
                    f"reset (wanted {value(target)})"
                )
            time.sleep(0.5)

    def step_power_off(self):
        allowed = sorted(value(v) for v in self.system().get_allowed_reset_system_values())
        return self.set_power(sushy.RESET_FORCE_OFF, sushy.POWER_STATE_OFF) + (
            " reset_types=" + ",".join(allowed)
        )

    def step_power_on(self):
        return self.set_power(sushy.RESET_ON, sushy.POWER_STATE_ON)

    def step_power_cycle(self):
        # Ironic's reboot: ForceOff and wait when on, then On and wait.
        system = self.system()
        if system.power_state == sushy.POWER_STATE_ON:
            system.reset_system(sushy.RESET_FORCE_OFF)
            off = self.wait_power(sushy.POWER_STATE_OFF)
        else:
            off = 0.0
        self.system().reset_system(sushy.RESET_ON)
        on = self.wait_power(sushy.POWER_STATE_ON)
        boot = self.system().boot
        return (
            f"off_after={off:.1f}s on_after={on:.1f}s "
            f"boot={value(boot.target) or '-'}/{value(boot.enabled) or '-'}"
        )

    def step_boot_cd(self):
        # Ironic's _set_boot_device(Cd, persistent=False): Enabled is sent only when it changes.
        system = self.system()
        allowed = system.get_allowed_system_boot_source_values()
        if sushy.BOOT_SOURCE_TARGET_CD not in allowed:
            raise StepFailed("Cd is not in BootSourceOverrideTarget@Redfish.AllowableValues")
        enabled = sushy.BOOT_SOURCE_ENABLED_ONCE
        if system.boot.enabled == enabled:
            enabled = None
        system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_CD, enabled=enabled)
        boot = self.system().boot
        if boot.target != sushy.BOOT_SOURCE_TARGET_CD:
            raise StepFailed(f"BootSourceOverrideTarget reads {value(boot.target)} after the PATCH")
        if boot.enabled != sushy.BOOT_SOURCE_ENABLED_ONCE:
            raise StepFailed(f"BootSourceOverrideEnabled reads {value(boot.enabled)} after the PATCH")
        return f"target=Cd enabled=Once mode={value(boot.mode) or '-'}"

    def cd_devices(self):
        """Virtual media that take a CD (or a DVD), from the system if it has any (Ironic's
        _has_vmedia_via_systems), else from its managers."""
        system = self.system()
        try:
            holders = [system.virtual_media]
        except (exceptions.MissingAttributeError, AttributeError):
            holders = [m.virtual_media for m in system.managers]
        devices = []
        for holder in holders:
            for media in holder.get_members():
                types = media.media_types or []
                if sushy.VIRTUAL_MEDIA_CD in types or sushy.VIRTUAL_MEDIA_DVD in types:
                    devices.append(media)
        return devices

    def step_insert_media(self):
        url = self.args.media
        if not url:
            raise StepFailed("no --media URL given")
        devices = self.cd_devices()
        if not devices:
            raise StepFailed("no virtual media with MediaTypes CD or DVD")
        # Ironic ejects what is there first, then inserts into the first CD/DVD device.
        for media in devices:
            if media.inserted:
                media.eject_media()
        media = devices[0]
        media.insert_media(url, inserted=True, write_protected=True)
        media.refresh(force=True)
        if not media.inserted:
            raise StepFailed(f"{media.path}: Inserted reads false after InsertMedia")
        if media.image != url:
            raise StepFailed(f"{media.path}: Image reads {media.image!r} after InsertMedia")
        return f"media={media.path} image={url}"

    def step_eject_media(self):
        ejected = []
        for media in self.cd_devices():
            if media.inserted:
                media.eject_media()
                media.refresh(force=True)
                if media.inserted:
                    raise StepFailed(f"{media.path}: Inserted reads true after EjectMedia")
                ejected.append(media.path)
        if not ejected:
            raise StepFailed("no CD/DVD virtual media was inserted")
        return "ejected=" + ",".join(ejected)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="service base URL, e.g. https://127.0.0.1:8443")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--system", required=True, help="system Id or its /redfish/v1/Systems/... path")
    parser.add_argument("--media", help="image URL for insert-media")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    parser.add_argument("--http-timeout", type=float, default=30, help="seconds per HTTP request")
    parser.add_argument("--power-timeout", type=float, default=120, help="seconds to reach a PowerState")
    parser.add_argument("steps", nargs="*", metavar="STEP",
                        help="steps to run, in order (default: all): " + " ".join(STEPS))
    args = parser.parse_args(argv)
    for step in args.steps:
        if step not in STEPS:
            parser.error(f"unknown step {step!r}; steps: {' '.join(STEPS)}")
    return args


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.insecure:
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
    scenario = Scenario(args)
    for step in args.steps or STEPS:
        try:
            detail = getattr(scenario, "step_" + step.replace("-", "_"))()
        except StepFailed as e:
            report(step, False, str(e))
            return 1
        except Exception as e:  # noqa: BLE001 - any error of a step is that step's failure
            report(step, False, f"{type(e).__name__}: {e}")
            return 1
        report(step, True, detail)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
