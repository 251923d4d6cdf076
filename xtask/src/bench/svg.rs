//! `cargo xtask bench --plot`: an SVG written by hand (no plotting dependency) with two
//! panels: boot cost against the number of slices, and native/slice instruction ratios.

use std::fmt::Write;

use super::results::{Results, number};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 360.0;
const PANEL: f64 = 380.0;
const TOP: f64 = 50.0;
const PLOT_H: f64 = 240.0;

/// The SVG document for `results`.
pub fn plot(results: &Results) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    boot_panel(&mut s, results, 60.0);
    ratio_panel(&mut s, results, 60.0 + PANEL + 70.0);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{} · {}</text>"##,
        WIDTH / 2.0,
        HEIGHT - 10.0,
        escape(&results.qemu),
        escape(&results.method)
    );
    s.push_str("</svg>\n");
    s
}

/// Boot cost (reset to the last slice released) against slice count.
fn boot_panel(s: &mut String, results: &Results, x0: f64) {
    let points: Vec<(f64, f64)> = [1, 4, 8, 32]
        .iter()
        .filter_map(|&n| {
            let v = results.get(&format!("boot-{n}"))?.value?;
            Some((f64::from(n), v))
        })
        .collect();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-weight="bold">Boot: instructions from reset to the last slice released</text>"#,
        x0 + PANEL / 2.0
    );
    axes(s, x0);
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let max_x = 32.0;
    let px = |x: f64| x0 + x / max_x * PANEL;
    let py = |y: f64| TOP + PLOT_H - y / max_y * PLOT_H;
    for i in 0..=4 {
        let y = max_y * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}M</text>"#,
            x0 - 5.0,
            py(y) + 4.0,
            number((y / 1e5).round() / 10.0)
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##,
        path.join(" ")
    );
    for &(x, y) in &points {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#1f77b4"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
            px(x),
            py(y),
            px(x),
            py(y) - 8.0,
            number((y / 1e4).round() / 100.0) + "M",
            px(x),
            TOP + PLOT_H + 16.0,
            x
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">slices (one core each)</text>"#,
        x0 + PANEL / 2.0,
        TOP + PLOT_H + 34.0
    );
}

/// Native/slice instruction ratios (1 = no virtualization cost).
fn ratio_panel(s: &mut String, results: &Results, x0: f64) {
    let bars: Vec<(&str, f64)> = ["null-hvc", "mmio-read", "timer-irq", "workload"]
        .iter()
        .filter_map(|&id| {
            let m = results.get(id)?;
            let ratio = if id == "workload" {
                m.value?
            } else {
                m.native? / m.value?
            };
            Some((id, ratio))
        })
        .collect();
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-weight="bold">Native / slice instructions (1 = no cost)</text>"#,
        x0 + PANEL / 2.0
    );
    axes(s, x0);
    let py = |y: f64| TOP + PLOT_H - y.clamp(0.0, 1.0) * PLOT_H;
    for i in 0..=4 {
        let y = f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 - 5.0,
            py(y) + 4.0,
            number(y)
        );
    }
    let slot = PANEL / bars.len().max(1) as f64;
    for (i, (id, ratio)) in bars.iter().enumerate() {
        let x = x0 + slot * i as f64 + slot * 0.2;
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#ff7f0e"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{}" text-anchor="middle">{id}</text>"##,
            py(*ratio),
            slot * 0.6,
            TOP + PLOT_H - py(*ratio),
            x + slot * 0.3,
            py(*ratio) - 6.0,
            number((ratio * 10000.0).round() / 10000.0),
            x + slot * 0.3,
            TOP + PLOT_H + 16.0,
        );
    }
}

fn axes(s: &mut String, x0: f64) {
    let _ = writeln!(
        s,
        r#"<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{}" stroke="black"/><line x1="{x0}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        TOP + PLOT_H,
        TOP + PLOT_H,
        x0 + PANEL,
        TOP + PLOT_H
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::super::results::{Goal, Metric};
    use super::*;

    #[test]
    fn plot_has_both_panels() {
        let r = Results {
            qemu: "QEMU <10>".into(),
            method: "-icount shift=0".into(),
            linux: None,
            metrics: vec![
                Metric::new("boot-1", "b", 400_000.0, "insn", Goal::None),
                Metric::new("boot-8", "b", 900_000.0, "insn", Goal::None),
                Metric::new("null-hvc", "n", 120.0, "insn", Goal::None).with_native(6.0),
                Metric::new("workload", "w", 1.0, "ratio", Goal::None),
            ],
        };
        let svg = plot(&r);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("QEMU &lt;10&gt;"));
        assert!(svg.contains(">0.05<"), "null-hvc ratio 6/120");
    }
}
