//! Running DMTF's Redfish-Service-Validator and Redfish-Interop-Validator against a service
//! and reading what they found: the counts from the table they print last, every result from
//! their Excel report (through `report_rows.py`).
//!
//! Nothing leaves the machine: the service validator reads the CSDL from
//! `target/redfish-tools/csdl` (`--skipschema`), and both run with every proxy variable (and
//! the service validator's `--ext_http(s)_proxy`) pointed at [`DEAD_PROXY`], a loopback port
//! nothing listens on, with only the service's own host exempted through `NO_PROXY`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::process;
use super::setup::Tools;

/// A loopback port nothing listens on (discard, privileged): every request through it fails.
pub const DEAD_PROXY: &str = "http://127.0.0.1:9";
/// Seconds the validators wait for one HTTP answer (`--timeout`).
pub const REQUEST_TIMEOUT_S: u32 = 30;
/// The longest a whole validator run may take before it is killed.
pub const RUN_LIMIT: Duration = Duration::from_secs(1200);

/// A Redfish service to check.
#[derive(Clone, Debug)]
pub struct Service {
    /// Base URL, scheme included, without `/redfish/v1` (e.g. `https://127.0.0.1:8443`).
    pub url: String,
    /// User name for HTTP Basic authentication.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Service {
    /// The host part of the URL (what `NO_PROXY` must name).
    pub fn host(&self) -> Result<String> {
        url_host(&self.url).with_context(|| format!("no host in the service URL {:?}", self.url))
    }

    /// Sets the proxy variables on a command: everything through the dead proxy except the
    /// service's host.
    pub fn isolate(&self, cmd: &mut Command) -> Result<()> {
        let host = self.host()?;
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            cmd.env(var, DEAD_PROXY).env(var.to_lowercase(), DEAD_PROXY);
        }
        cmd.env("NO_PROXY", &host).env("no_proxy", &host);
        Ok(())
    }
}

/// The host of `scheme://[user@]host[:port][/path]` (an IPv6 literal without its brackets).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Which validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validator {
    /// `rf_service_validator`: every resource against the DMTF schemas.
    Service,
    /// `rf_interop_validator` with Ironic's profile.
    Interop,
}

impl Validator {
    /// A name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Validator::Service => "service validator",
            Validator::Interop => "interop validator (OpenStackIronicProfile v1.2.0)",
        }
    }

    fn program(self) -> &'static str {
        match self {
            Validator::Service => "rf_service_validator",
            Validator::Interop => "rf_interop_validator",
        }
    }
}

/// The four numbers of a validator's closing table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pass: u64,
    pub warn: u64,
    pub fail: u64,
    pub not_tested: u64,
}

/// What one validator run found.
#[derive(Clone, Debug)]
pub struct Summary {
    pub validator: Validator,
    pub counts: Counts,
    /// One line per FAIL result: `URI property = value: message`, or
    /// `resource type T: message` for the interop validator's service-wide checks.
    pub failures: Vec<String>,
    /// One line per WARN result, same form.
    pub warnings: Vec<String>,
    /// One line per SKIP result, same form.
    pub not_tested: Vec<String>,
    /// The SKIP results whose requirement in the profile is Mandatory (interop only): e.g.
    /// a Mandatory `WriteRequirement` the validator could not test because the resource has
    /// neither an `Allow` header nor `@Redfish.WriteableProperties`.
    pub mandatory_not_tested: Vec<String>,
    /// The run's directory: the tool's HTML and Excel reports, its debug log, `run.log`.
    pub report_dir: PathBuf,
}

impl Summary {
    /// No failure.
    pub fn passed(&self) -> bool {
        self.counts.fail == 0
    }

    /// `service validator: 555 pass, 16 warn, 34 fail, 450 not tested`, then up to `max`
    /// failures (and the Mandatory requirements not tested), one per line.
    pub fn render(&self, max: usize) -> String {
        let c = self.counts;
        let mut text = format!(
            "{}: {} pass, {} warn, {} fail, {} not tested",
            self.validator.name(),
            c.pass,
            c.warn,
            c.fail,
            c.not_tested
        );
        let mut list = |label: &str, lines: &[String]| {
            for line in lines.iter().take(max) {
                let _ = write!(text, "\n  {label} {line}");
            }
            if lines.len() > max {
                let _ = write!(text, "\n  ... {} more {label} lines", lines.len() - max);
            }
        };
        list("FAIL", &self.failures);
        list("NOT TESTED (Mandatory)", &self.mandatory_not_tested);
        text
    }
}

/// Runs the service validator over the whole tree of `service` (Basic auth); its reports go
/// to `log_dir` (emptied first).
pub fn service_validator(tools: &Tools, service: &Service, log_dir: &Path) -> Result<Summary> {
    let mut cmd = Command::new(tools.bin.join(Validator::Service.program()));
    cmd.arg("--ip")
        .arg(&service.url)
        .args([
            "--authtype",
            "Basic",
            "-u",
            &service.user,
            "-p",
            &service.password,
        ])
        .arg("--schema_directory")
        .arg(&tools.csdl)
        .arg("--skipschema")
        .args([
            "--ext_http_proxy",
            DEAD_PROXY,
            "--ext_https_proxy",
            DEAD_PROXY,
        ])
        .args(["--timeout", &REQUEST_TIMEOUT_S.to_string()]);
    run(tools, Validator::Service, cmd, service, log_dir)
}

/// Runs the interop validator with Ironic's profile against `service` (Basic auth); its
/// reports go to `log_dir` (emptied first).
pub fn interop_validator(tools: &Tools, service: &Service, log_dir: &Path) -> Result<Summary> {
    let mut cmd = Command::new(tools.bin.join(Validator::Interop.program()));
    cmd.args(["-u", &service.user, "-p", &service.password])
        .arg("--rhost")
        .arg(&service.url)
        .args(["--authtype", "Basic"])
        .args(["--timeout", &REQUEST_TIMEOUT_S.to_string()])
        .arg(&tools.ironic_profile);
    run(tools, Validator::Interop, cmd, service, log_dir)
}

fn run(
    tools: &Tools,
    validator: Validator,
    mut cmd: Command,
    service: &Service,
    log_dir: &Path,
) -> Result<Summary> {
    if log_dir.exists() {
        std::fs::remove_dir_all(log_dir)
            .with_context(|| format!("emptying {}", log_dir.display()))?;
    }
    std::fs::create_dir_all(log_dir)?;
    cmd.arg("--logdir").arg(log_dir).current_dir(log_dir);
    service.isolate(&mut cmd)?;
    let done = process::run(
        &mut cmd,
        RUN_LIMIT,
        Some(&log_dir.join("run.log")),
        &service.password,
    )?;
    let Some(counts) = parse_counts(&done.stdout) else {
        bail!(
            "{} gave no result table ({}; log {}):\n{}",
            validator.name(),
            done.describe(RUN_LIMIT),
            log_dir.join("run.log").display(),
            done.tail(10)
        );
    };
    let report = find_report(log_dir)?;
    let rows = process::run(
        Command::new(tools.python())
            .arg(&tools.report_rows)
            .arg(&report),
        Duration::from_secs(120),
        None,
        "",
    )?;
    if !rows.success() {
        bail!("reading {}: {}", report.display(), rows.tail(5));
    }
    let rows = parse_rows(&rows.stdout)?;
    let profile = match validator {
        Validator::Interop => Some(
            std::fs::read_to_string(&tools.ironic_profile)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .context("reading Ironic's profile")?,
        ),
        Validator::Service => None,
    };
    Ok(summarize(
        validator,
        counts,
        &rows,
        profile.as_ref(),
        report.parent().unwrap_or(log_dir),
    ))
}

/// The `.xlsx` report a run left in (a dated directory below) `log_dir`.
fn find_report(log_dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![log_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "xlsx") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
        .pop()
        .with_context(|| format!("no Excel report in {}", log_dir.display()))
}

/// The numbers of the closing table:
///
/// ```text
/// |     PASS     |     WARN     |     FAIL     |  NOT TESTED  |
/// +--------------+--------------+--------------+--------------+
/// |     555      |      16      |      34      |     450      |
/// ```
///
/// (colour codes, as in the debug log, are ignored). The last table wins.
pub fn parse_counts(stdout: &str) -> Option<Counts> {
    let cells = |line: &str| -> Vec<String> {
        strip_ansi(line)
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let lines: Vec<&str> = stdout.lines().collect();
    let mut found = None;
    for (i, line) in lines.iter().enumerate() {
        let header = cells(line);
        if header != ["PASS", "WARN", "FAIL", "NOT TESTED"] {
            continue;
        }
        let values = lines[i + 1..]
            .iter()
            .map(|l| cells(l))
            .find(|c| c.len() == 4 && c.iter().all(|v| v.parse::<u64>().is_ok()));
        if let Some(v) = values {
            let n = |k: usize| v[k].parse().unwrap_or(0);
            found = Some(Counts {
                pass: n(0),
                warn: n(1),
                fail: n(2),
                not_tested: n(3),
            });
        }
    }
    found
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One result of a validator's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// A property (or resource-level) result: sheet "Results".
    Property {
        uri: String,
        /// `ComputerSystem v1.13.0`, or `Unknown`.
        resource_type: String,
        /// A path such as `Boot/BootSourceOverrideTarget (Write)`, or `-` for the resource.
        property: String,
        value: String,
        result: String,
        message: String,
    },
    /// A service-wide result for a resource type: sheet "Resources" (interop only).
    ResourceType {
        resource_type: String,
        result: String,
        message: String,
    },
}

impl Row {
    /// `PASS`, `WARN`, `FAIL` or `SKIP`.
    pub fn result(&self) -> &str {
        match self {
            Row::Property { result, .. } | Row::ResourceType { result, .. } => result,
        }
    }

    /// One line for people, with the profile's "; Profile: ..." suffix dropped and long
    /// values shortened.
    pub fn line(&self) -> String {
        match self {
            Row::Property {
                uri,
                property,
                value,
                message,
                ..
            } => {
                if property == "-" || property.is_empty() {
                    format!("{uri}: {}", without_profile(message))
                } else {
                    format!(
                        "{uri} {property} = {}: {}",
                        shorten(value, 60),
                        without_profile(message)
                    )
                }
            }
            Row::ResourceType {
                resource_type,
                message,
                ..
            } => format!(
                "resource type {resource_type}: {}",
                without_profile(message)
            ),
        }
    }
}

fn without_profile(message: &str) -> &str {
    message.split("; Profile: ").next().unwrap_or(message)
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}...")
    }
}

/// The lines `report_rows.py` prints (see its docstring).
pub fn parse_rows(text: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let s = |i: usize| f[i].to_string();
        rows.push(match (f[0], f.len()) {
            ("R", 7) => Row::Property {
                uri: s(1),
                resource_type: s(2),
                property: s(3),
                value: s(4),
                result: s(5),
                message: s(6),
            },
            ("T", 4) => Row::ResourceType {
                resource_type: s(1),
                result: s(2),
                message: s(3),
            },
            _ => bail!(
                "report row {}: not R with 6 fields or T with 3: {line:?}",
                n + 1
            ),
        });
    }
    Ok(rows)
}

/// Sorts the rows into the summary's lists.
pub fn summarize(
    validator: Validator,
    counts: Counts,
    rows: &[Row],
    profile: Option<&serde_json::Value>,
    report_dir: &Path,
) -> Summary {
    let pick = |result: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.result() == result)
            .map(Row::line)
            .collect()
    };
    let mandatory_not_tested = profile
        .map(|p| {
            rows.iter()
                .filter(|r| r.result() == "SKIP" && requirement(p, r) == "Mandatory")
                .map(Row::line)
                .collect()
        })
        .unwrap_or_default();
    Summary {
        validator,
        counts,
        failures: pick("FAIL"),
        warnings: pick("WARN"),
        not_tested: pick("SKIP"),
        mandatory_not_tested,
        report_dir: report_dir.to_path_buf(),
    }
}

/// The requirement an interop profile puts on what a row tested: `ReadRequirement` (default
/// Mandatory) of a resource type, property or action, or `WriteRequirement` (default None) for
/// a `(Write)` property. Array indices in property paths are skipped; anything the profile
/// does not name is `None`.
pub fn requirement(profile: &serde_json::Value, row: &Row) -> String {
    let (resource_type, path) = match row {
        Row::ResourceType { resource_type, .. } => (resource_type.as_str(), ""),
        Row::Property {
            resource_type,
            property,
            ..
        } => (
            resource_type.split_whitespace().next().unwrap_or(""),
            property.as_str(),
        ),
    };
    let Some(mut node) = profile["Resources"].get(resource_type) else {
        return "None".into();
    };
    let (path, write) = match path.strip_suffix(" (Write)") {
        Some(p) => (p, true),
        None => (path, false),
    };
    let mut segments = path
        .split('/')
        .filter(|s| !s.is_empty() && s.parse::<u64>().is_err());
    while let Some(segment) = segments.next() {
        let next = if segment == "Actions" {
            segments.next().and_then(|action| {
                let name = action.rsplit('.').next().unwrap_or(action);
                node["ActionRequirements"].get(name)
            })
        } else {
            node["PropertyRequirements"].get(segment)
        };
        match next {
            Some(n) => node = n,
            None => return "None".into(),
        }
    }
    let (key, default) = if write {
        ("WriteRequirement", "None")
    } else {
        ("ReadRequirement", "Mandatory")
    };
    node[key].as_str().unwrap_or(default).to_string()
}

/// Counts of results by kind, for checking the rows against the table.
pub fn tally(rows: &[Row]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for row in rows {
        *counts.entry(row.result().to_string()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE_STDOUT: &str = "Redfish Service Validator, Version 3.1.8

Skipping schema download; using cached schemas only

Validating /redfish/v1/...
  - Pass: 12, Warn: 0, Fail: 2, Skip: 19
Could not access /redfish/v1/UpdateService/SoftwareInventory; HTTP status: 404
  - Pass: 0, Warn: 0, Fail: 1, Skip: 0


+--------------+--------------+--------------+--------------+
|     PASS     |     WARN     |     FAIL     |  NOT TESTED  |
+--------------+--------------+--------------+--------------+
|     555      |      16      |      34      |     450      |
+--------------+--------------+--------------+--------------+


HTML Report:  svlogs/2026-12-03-061553/RedfishServiceValidatorReport_12_03_2026_061553.html
";

    #[test]
    fn reads_the_closing_table() {
        assert_eq!(
            parse_counts(SERVICE_STDOUT),
            Some(Counts {
                pass: 555,
                warn: 16,
                fail: 34,
                not_tested: 450
            })
        );
        // The debug log's copy has colour codes around the numbers.
        let coloured = "+---+\n|     PASS     |     WARN     |     FAIL     |  NOT TESTED  |\n\
            +--------------+\n| \u{1b}[32m     75     \u{1b}[0m |      0       | \u{1b}[31m     2      \u{1b}[0m |      33      |\n";
        assert_eq!(
            parse_counts(coloured),
            Some(Counts {
                pass: 75,
                warn: 0,
                fail: 2,
                not_tested: 33
            })
        );
    }

    #[test]
    fn no_table_means_no_counts() {
        assert_eq!(
            parse_counts(
                "Redfish Service Validator, Version 3.1.8\n\nCould not set up the service: \n"
            ),
            None
        );
        assert_eq!(
            parse_counts("|  PASS  |  WARN  |  FAIL  |  NOT TESTED  |\n| a | b | c | d |\n"),
            None
        );
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(strip_ansi("| \u{1b}[32m 75 \u{1b}[0m |"), "|  75  |");
        assert_eq!(strip_ansi("plain"), "plain");
    }

    const ROWS: &str = "R\t/redfish/v1/\tServiceRoot v1.5.0\tLinks\t[Not Present]\tFAIL\tRequired Property Error: The property 'Links' is mandatory, but not present in the payload.
R\t/redfish/v1/CertificateService/ReplaceCertificateActionInfo\tUnknown\t-\t[Resource-level]\tFAIL\tResource Error: Received HTTP 404 when accessing the URI.
R\t/redfish/v1/Systems/1\tComputerSystem v1.13.0\tBoot/BootSourceOverrideTarget (Write)\tHdd\tSKIP\tSkip: Cannot test; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default
R\t/redfish/v1/Systems/1\tComputerSystem v1.13.0\tIndicatorLED (Write)\tLit\tSKIP\tSkip: Cannot test; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default
R\t/redfish/v1/Systems/1\tComputerSystem v1.13.0\tIndicatorLED\tLit\tWARN\tDeprecated Property Warning: The property is deprecated.
R\t/redfish/v1/Systems/1\tComputerSystem v1.13.0\tActions/#ComputerSystem.Reset\t[Object]\tPASS\tAction present; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default
R\t/redfish/v1/Chassis/1/Thermal\tThermal v1.3.0\tFans/0/SerialNumber\t[Not Present]\tSKIP\tSkip: The property is not present
T\tProcessor\tSKIP\tResource not found; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default
T\tComputerSystem\tPASS\tResource found; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default
";

    fn profile() -> serde_json::Value {
        serde_json::json!({"Resources": {
            "ComputerSystem": {"PropertyRequirements": {
                "Boot": {"PropertyRequirements": {
                    "BootSourceOverrideTarget": {"WriteRequirement": "Mandatory"}}},
                "IndicatorLED": {"ReadRequirement": "Recommended", "WriteRequirement": "Recommended"}},
                "ActionRequirements": {"Reset": {}}},
            "Processor": {"ReadRequirement": "Recommended"},
            "Thermal": {"ReadRequirement": "Recommended", "PropertyRequirements": {
                "Fans": {"PropertyRequirements": {"SerialNumber": {"ReadRequirement": "Recommended"}}}}}
        }})
    }

    #[test]
    fn parses_report_rows() {
        let rows = parse_rows(ROWS).unwrap();
        assert_eq!(rows.len(), 9);
        assert_eq!(
            rows[0],
            Row::Property {
                uri: "/redfish/v1/".into(),
                resource_type: "ServiceRoot v1.5.0".into(),
                property: "Links".into(),
                value: "[Not Present]".into(),
                result: "FAIL".into(),
                message: "Required Property Error: The property 'Links' is mandatory, but not present in the payload.".into(),
            }
        );
        assert_eq!(
            rows[7],
            Row::ResourceType {
                resource_type: "Processor".into(),
                result: "SKIP".into(),
                message: "Resource not found; Profile: OpenStackIronicProfile (v1.2.0), Use Case: Default".into(),
            }
        );
        let t = tally(&rows);
        assert_eq!((t["FAIL"], t["SKIP"], t["WARN"], t["PASS"]), (2, 4, 1, 2));
    }

    #[test]
    fn malformed_rows_are_errors() {
        assert!(parse_rows("R\tonly\tthree\n").is_err());
        assert!(parse_rows("X\ta\tb\tc\n").is_err());
        assert!(parse_rows("\n").unwrap().is_empty());
    }

    #[test]
    fn rows_become_one_line_each() {
        let rows = parse_rows(ROWS).unwrap();
        assert_eq!(
            rows[1].line(),
            "/redfish/v1/CertificateService/ReplaceCertificateActionInfo: Resource Error: Received HTTP 404 when accessing the URI."
        );
        assert_eq!(
            rows[2].line(),
            "/redfish/v1/Systems/1 Boot/BootSourceOverrideTarget (Write) = Hdd: Skip: Cannot test"
        );
        assert_eq!(
            rows[7].line(),
            "resource type Processor: Resource not found"
        );
        let long = Row::Property {
            uri: "/u".into(),
            resource_type: "T".into(),
            property: "P".into(),
            value: "x".repeat(100),
            result: "FAIL".into(),
            message: "m".into(),
        };
        assert_eq!(long.line(), format!("/u P = {}...: m", "x".repeat(60)));
    }

    #[test]
    fn requirements_come_from_the_profile() {
        let rows = parse_rows(ROWS).unwrap();
        let p = profile();
        let req: Vec<String> = rows.iter().map(|r| requirement(&p, r)).collect();
        assert_eq!(
            req,
            [
                "None",        // ServiceRoot: not in this profile
                "None",        // Unknown type
                "Mandatory",   // Boot/BootSourceOverrideTarget (Write)
                "Recommended", // IndicatorLED (Write)
                "Recommended", // IndicatorLED read
                "Mandatory",   // the Reset action, default ReadRequirement
                "Recommended", // Fans/0/SerialNumber: the index is skipped
                "Recommended", // resource type Processor
                "Mandatory",   // resource type ComputerSystem, default
            ]
        );
    }

    #[test]
    fn the_summary_sorts_rows_and_flags_mandatory_skips() {
        let rows = parse_rows(ROWS).unwrap();
        let counts = Counts {
            pass: 2,
            warn: 1,
            fail: 2,
            not_tested: 4,
        };
        let s = summarize(
            Validator::Interop,
            counts,
            &rows,
            Some(&profile()),
            Path::new("/l"),
        );
        assert_eq!(s.failures.len(), 2);
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.not_tested.len(), 4);
        assert_eq!(
            s.mandatory_not_tested,
            [
                "/redfish/v1/Systems/1 Boot/BootSourceOverrideTarget (Write) = Hdd: Skip: Cannot test"
            ]
        );
        assert!(!s.passed());
        let text = s.render(1);
        assert!(
            text.starts_with("interop validator (OpenStackIronicProfile v1.2.0): 2 pass, 1 warn, 2 fail, 4 not tested\n  FAIL /redfish/v1/ Links"),
            "{text}"
        );
        assert!(text.contains("... 1 more FAIL lines"), "{text}");
        assert!(
            text.contains("NOT TESTED (Mandatory) /redfish/v1/Systems/1 Boot"),
            "{text}"
        );
        let service = summarize(Validator::Service, counts, &rows, None, Path::new("/l"));
        assert!(service.mandatory_not_tested.is_empty());
    }

    #[test]
    fn finds_the_host_of_a_url() {
        assert_eq!(
            url_host("https://127.0.0.1:8443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            url_host("http://localhost/redfish/v1").as_deref(),
            Some("localhost")
        );
        assert_eq!(url_host("https://u:p@[::1]:443/x").as_deref(), Some("::1"));
        assert_eq!(url_host("127.0.0.1:8443"), None);
        assert_eq!(url_host("http:///x"), None);
    }

    #[test]
    fn the_service_is_isolated_behind_the_dead_proxy() {
        let service = Service {
            url: "https://127.0.0.1:8443".into(),
            user: "admin".into(),
            password: "pw".into(),
        };
        let mut cmd = Command::new("true");
        service.isolate(&mut cmd).unwrap();
        let envs: BTreeMap<_, _> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        assert_eq!(envs["HTTPS_PROXY"], DEAD_PROXY);
        assert_eq!(envs["http_proxy"], DEAD_PROXY);
        assert_eq!(envs["NO_PROXY"], "127.0.0.1");
    }
}
