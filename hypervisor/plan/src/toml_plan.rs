//! Reading a plan from TOML (docs/plan.md). The text is parsed into a `toml::Table` and walked by
//! hand, so that every error names its slice (by name, or `#N` before it has a valid one) and
//! its field; unknown keys are errors at every level.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use toml::{Table, Value};

use crate::devices::{DeviceClass, DeviceRequest, PciAddress};
use crate::error::{
    DEVICE_KEYS, FIRMWARE_KEYS, Field, NVME_KEYS, PLAN_KEYS, PlanError, Problem, SLICE_KEYS,
};
use crate::model::{
    BootProtocol, BuiltIn, Cores, DEFAULT_STAGING, ImageSource, NvmeShare, OnFault, Plan,
    RedfishTls, Role, SliceOf,
};
use crate::size::{SizeError, parse_size};
use crate::validate::slice_ref;

/// What `memory` and `nvme.size` accept.
const SIZE_EXPECTED: &str = "a size (bytes, or a string like \"512MiB\")";
/// What a string field accepts.
const STRING_EXPECTED: &str = "a string";

impl Plan {
    /// Parses a plan from TOML text and runs [`validate`](crate::PlanOf::validate) on it.
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let table: Table = text.parse().map_err(|error| syntax_error(text, &error))?;
        let plan = parse_plan(&table)?;
        plan.validate()?;
        Ok(plan)
    }
}

fn syntax_error(text: &str, error: &toml::de::Error) -> PlanError {
    let line = error.span().map_or(0, |span| line_of(text, span.start));
    let message = error.message().trim().replace('\n', "; ");
    PlanError::plan(Problem::Syntax { line, message })
}

/// 1-based line number of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let before = text.get(..at).unwrap_or(text);
    before.matches('\n').count() + 1
}

fn parse_plan(table: &Table) -> Result<Plan, PlanError> {
    reject_unknown_keys(table, &PLAN_KEYS).map_err(PlanError::plan)?;
    let entries = match table.get("slice") {
        None => return Err(PlanError::plan(Problem::NoSlices)),
        Some(Value::Array(entries)) => entries,
        Some(other) => return Err(PlanError::plan(wrong_type("[[slice]] tables", other))),
    };
    let slices = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| parse_slice(index, entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Plan { slices })
}

fn parse_slice(index: usize, entry: &Value) -> Result<SliceOf<ImageSource>, PlanError> {
    let Value::Table(table) = entry else {
        let at = slice_ref(index, "");
        return Err(PlanError::slice(
            at,
            Field::Slice,
            wrong_type("a table ([[slice]])", entry),
        ));
    };
    let name = table.get("name").and_then(Value::as_str).unwrap_or("");
    let at = slice_ref(index, name);
    let at = at.as_str();
    let field = |field: Field| move |problem: Problem| PlanError::slice(at, field, problem);
    reject_unknown_keys(table, &SLICE_KEYS).map_err(field(Field::Slice))?;
    Ok(SliceOf {
        name: required(table, "name")
            .and_then(string)
            .map_err(field(Field::Name))?,
        cores: required(table, "cores")
            .and_then(cores)
            .map_err(field(Field::Cores))?,
        memory: required(table, "memory")
            .and_then(size)
            .map_err(field(Field::Memory))?,
        kernel: required(table, "kernel")
            .and_then(kernel)
            .map_err(field(Field::Kernel))?,
        initrd: optional(table, "initrd", initrd).map_err(field(Field::Initrd))?,
        cmdline: optional(table, "cmdline", string)
            .map_err(field(Field::Cmdline))?
            .unwrap_or_default(),
        on_fault: optional(table, "on-fault", on_fault)
            .map_err(field(Field::OnFault))?
            .unwrap_or(OnFault::Exception),
        nvme: match table.get("nvme") {
            None => None,
            Some(value) => Some(nvme(value).map_err(|(f, problem)| field(f)(problem))?),
        },
        devices: match table.get("device") {
            None => Vec::new(),
            Some(value) => devices(value).map_err(|(f, problem)| field(f)(problem))?,
        },
        role: role(table).map_err(|(f, problem)| field(f)(problem))?,
        boot: BootProtocol::Linux,
        firmware_env: match table.get("firmware") {
            None => Vec::new(),
            Some(value) => firmware_env(value).map_err(|(f, problem)| field(f)(problem))?,
        },
        // Filled by xtask from the firmware binary.
        firmware_network_env: Vec::new(),
        redfish_tls: redfish_tls(table).map_err(|(f, problem)| field(f)(problem))?,
    })
    .map(|mut slice| {
        if slice.kernel == ImageSource::BuiltIn(BuiltIn::Firmware) {
            slice.boot = BootProtocol::Firmware;
        }
        slice
    })
}

/// `[slice.firmware]`: its `env` table of string values (names and values are checked by
/// `validate`).
fn firmware_env(value: &Value) -> Result<Vec<(String, String)>, (Field, Problem)> {
    let table = value.as_table().ok_or_else(|| {
        (
            Field::Firmware,
            wrong_type("a table ([slice.firmware])", value),
        )
    })?;
    reject_unknown_keys(table, &FIRMWARE_KEYS).map_err(|p| (Field::Firmware, p))?;
    let Some(env) = table.get("env") else {
        return Ok(Vec::new());
    };
    let env = env.as_table().ok_or_else(|| {
        (
            Field::FirmwareEnv,
            wrong_type("a table of strings ([slice.firmware.env])", env),
        )
    })?;
    env.iter()
        .map(|(name, value)| {
            let value = string(value).map_err(|p| (Field::FirmwareEnv, p))?;
            Ok((name.clone(), value))
        })
        .collect()
}

/// `role` and `staging`: `staging` only with `role = "manager"`.
fn role(table: &Table) -> Result<Role, (Field, Problem)> {
    let manager = match optional(table, "role", string).map_err(|p| (Field::Role, p))? {
        None => false,
        Some(role) if role == "tenant" => false,
        Some(role) if role == "manager" => true,
        Some(role) => return Err((Field::Role, Problem::UnknownRole(role))),
    };
    let staging = optional(table, "staging", size).map_err(|p| (Field::Staging, p))?;
    match (manager, staging) {
        (false, None) => Ok(Role::Tenant),
        (false, Some(_)) => Err((Field::Staging, Problem::StagingWithoutManager)),
        (true, staging) => Ok(Role::Manager {
            staging: staging.unwrap_or(DEFAULT_STAGING),
        }),
    }
}

/// The manager's `redfish-certificate` and `redfish-key` (both or neither; checked against
/// the role by validation).
fn redfish_tls(table: &Table) -> Result<Option<RedfishTls>, (Field, Problem)> {
    let path = |key: &str, field: Field| {
        optional(table, key, string)
            .and_then(|p| match p {
                Some(p) if p.is_empty() => Err(Problem::EmptyPath),
                p => Ok(p),
            })
            .map_err(|p| (field, p))
    };
    let certificate = path("redfish-certificate", Field::RedfishCertificate)?;
    let key = path("redfish-key", Field::RedfishKey)?;
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some(certificate), Some(key)) => Ok(Some(RedfishTls { certificate, key })),
        (None, Some(_)) => Err((Field::RedfishCertificate, Problem::RedfishHalfGiven)),
        (Some(_), None) => Err((Field::RedfishKey, Problem::RedfishHalfGiven)),
    }
}

/// The first key of `table` not in `allowed`, as an `UnknownField` problem.
fn reject_unknown_keys(table: &Table, allowed: &[&str]) -> Result<(), Problem> {
    match table.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(Problem::UnknownField(key.clone())),
        None => Ok(()),
    }
}

fn required<'a>(table: &'a Table, key: &str) -> Result<&'a Value, Problem> {
    table.get(key).ok_or(Problem::MissingField)
}

fn optional<T>(
    table: &Table,
    key: &str,
    parse: impl Fn(&Value) -> Result<T, Problem>,
) -> Result<Option<T>, Problem> {
    table.get(key).map(parse).transpose()
}

fn wrong_type(expected: &'static str, found: &Value) -> Problem {
    Problem::WrongType {
        expected,
        found: found.type_str(),
    }
}

fn string(value: &Value) -> Result<String, Problem> {
    value
        .as_str()
        .map(String::from)
        .ok_or_else(|| wrong_type(STRING_EXPECTED, value))
}

/// An integer in `min..=u32::MAX`.
fn integer_u32(value: &Value, min: u32, expected: &'static str) -> Result<u32, Problem> {
    let number = value
        .as_integer()
        .ok_or_else(|| wrong_type(expected, value))?;
    u32::try_from(number)
        .ok()
        .filter(|&n| n >= min)
        .ok_or(Problem::OutOfRange {
            value: number,
            min: min.into(),
            max: u32::MAX.into(),
        })
}

fn cores(value: &Value) -> Result<Cores, Problem> {
    match value {
        Value::Integer(0) => Err(Problem::ZeroCores),
        Value::Integer(_) => Ok(Cores::Count(integer_u32(value, 1, "a core count")?)),
        Value::Array(list) => list
            .iter()
            .map(|core| integer_u32(core, 0, "core indexes (integers)"))
            .collect::<Result<_, _>>()
            .map(Cores::List),
        other => Err(wrong_type("a core count or a list of core indexes", other)),
    }
}

fn size(value: &Value) -> Result<u64, Problem> {
    match value {
        Value::Integer(bytes) => u64::try_from(*bytes).map_err(|_| Problem::BadSize {
            text: bytes.to_string(),
            reason: SizeError::Negative,
        }),
        Value::String(text) => parse_size(text).map_err(|reason| Problem::BadSize {
            text: text.clone(),
            reason,
        }),
        other => Err(wrong_type(SIZE_EXPECTED, other)),
    }
}

fn image_path(value: &Value) -> Result<String, Problem> {
    let path = string(value)?;
    if path.is_empty() {
        return Err(Problem::EmptyPath);
    }
    Ok(path)
}

fn built_in(name: &str) -> Option<BuiltIn> {
    match name {
        "probe" => Some(BuiltIn::Probe),
        "linux" => Some(BuiltIn::Linux),
        "firmware" => Some(BuiltIn::Firmware),
        _ => None,
    }
}

fn kernel(value: &Value) -> Result<ImageSource, Problem> {
    let path = image_path(value)?;
    Ok(match built_in(&path) {
        Some(guest) => ImageSource::BuiltIn(guest),
        None => ImageSource::Path(path),
    })
}

fn initrd(value: &Value) -> Result<ImageSource, Problem> {
    let path = image_path(value)?;
    if built_in(&path).is_some() {
        return Err(Problem::NotAnInitrd(path));
    }
    Ok(ImageSource::Path(path))
}

fn on_fault(value: &Value) -> Result<OnFault, Problem> {
    match string(value)?.as_str() {
        "stop" => Ok(OnFault::Stop),
        "restart" => Ok(OnFault::Restart),
        "exception" => Ok(OnFault::Exception),
        other => Err(Problem::UnknownOnFault(other.into())),
    }
}

fn nvme(value: &Value) -> Result<NvmeShare, (Field, Problem)> {
    let table = value
        .as_table()
        .ok_or_else(|| (Field::Nvme, wrong_type("a table ([slice.nvme])", value)))?;
    reject_unknown_keys(table, &NVME_KEYS).map_err(|p| (Field::Nvme, p))?;
    let queues = required(table, "queues")
        .and_then(queue_count)
        .map_err(|p| (Field::NvmeQueues, p))?;
    let capacity = required(table, "size")
        .and_then(size)
        .map_err(|p| (Field::NvmeSize, p))?;
    let direct = match table.get("direct-queues") {
        None => false,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| (Field::NvmeDirectQueues, wrong_type("true or false", value)))?,
    };
    Ok(NvmeShare {
        queues,
        size: capacity,
        direct,
    })
}

/// The `[[slice.device]]` tables: each has exactly one of `pci` and `class`.
fn devices(value: &Value) -> Result<Vec<DeviceRequest>, (Field, Problem)> {
    let entries = value
        .as_array()
        .ok_or_else(|| (Field::Devices, wrong_type("[[slice.device]] tables", value)))?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| device(index.saturating_add(1), entry))
        .collect()
}

/// `[[slice.device]]` number `n` (1-based).
fn device(n: usize, value: &Value) -> Result<DeviceRequest, (Field, Problem)> {
    let entry = Field::DeviceEntry(n);
    let table = value
        .as_table()
        .ok_or_else(|| (entry, wrong_type("a table ([[slice.device]])", value)))?;
    reject_unknown_keys(table, &DEVICE_KEYS).map_err(|p| (entry, p))?;
    match (table.get("pci"), table.get("class")) {
        (Some(pci), None) => pci_address(pci)
            .map(DeviceRequest::Pci)
            .map_err(|p| (Field::DeviceEntryPci(n), p)),
        (None, Some(class)) => device_class(class)
            .map(DeviceRequest::Class)
            .map_err(|p| (Field::DeviceEntryClass(n), p)),
        (None, None) => Err((entry, Problem::DeviceWithoutPciOrClass)),
        (Some(_), Some(_)) => Err((entry, Problem::DeviceWithPciAndClass)),
    }
}

fn pci_address(value: &Value) -> Result<PciAddress, Problem> {
    let text = value
        .as_str()
        .ok_or_else(|| wrong_type("a PCI address string (\"BB:DD.F\")", value))?;
    PciAddress::parse(text).map_err(|reason| Problem::BadPciAddress {
        text: text.into(),
        reason,
    })
}

fn device_class(value: &Value) -> Result<DeviceClass, Problem> {
    let name = string(value)?;
    DeviceClass::from_name(&name).ok_or(Problem::UnknownDeviceClass(name))
}

fn queue_count(value: &Value) -> Result<u32, Problem> {
    match value {
        Value::Integer(0) => Err(Problem::ZeroQueues),
        _ => integer_u32(value, 1, "a number of queues"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{DeviceClass, DeviceRequest, PciAddress};
    use crate::size::{GIB, MIB};
    use alloc::vec;

    const GOOD: &str = r#"
[[slice]]
name = "web-0"
cores = 2
memory = "1GiB"
kernel = "linux"
initrd = "out/initrd.cpio.gz"
cmdline = "quiet"
on-fault = "restart"
[slice.nvme]
queues = 2
size = "4GiB"
[[slice.device]]
class = "net"
[[slice.device]]
pci = "00:05.0"
[[slice.device]]
class = "nvme"

[[slice]]
name = "probe-1"
cores = [5, 4]
memory = 67108864
kernel = "guests/Image"
"#;

    fn error(text: &str) -> String {
        Plan::from_toml(text).unwrap_err().to_string()
    }

    fn one_slice(fields: &str) -> String {
        format!("[[slice]]\nname = \"web-0\"\n{fields}\n")
    }

    /// A slice with every required field, plus `extra` lines.
    fn minimal_with(extra: &str) -> String {
        one_slice(&format!(
            "cores = 1\nmemory = \"64M\"\nkernel = \"probe\"\n{extra}"
        ))
    }

    #[test]
    fn parses_every_field() {
        let plan = Plan::from_toml(GOOD).unwrap();
        assert_eq!(
            plan.slices[0],
            SliceOf {
                name: "web-0".into(),
                cores: Cores::Count(2),
                memory: GIB,
                kernel: ImageSource::BuiltIn(BuiltIn::Linux),
                initrd: Some(ImageSource::Path("out/initrd.cpio.gz".into())),
                cmdline: "quiet".into(),
                on_fault: OnFault::Restart,
                nvme: Some(NvmeShare {
                    queues: 2,
                    size: 4 * GIB,
                    direct: false
                }),
                devices: vec![
                    DeviceRequest::Class(DeviceClass::Net),
                    DeviceRequest::Pci(PciAddress::new(0, 5, 0).unwrap()),
                    DeviceRequest::Class(DeviceClass::Nvme),
                ],
                role: Role::Tenant,
                boot: BootProtocol::Linux,
                firmware_env: Vec::new(),
                firmware_network_env: Vec::new(),
                redfish_tls: None,
            }
        );
        assert_eq!(
            plan.slices[1],
            SliceOf {
                name: "probe-1".into(),
                cores: Cores::List(vec![5, 4]),
                memory: 64 * MIB,
                kernel: ImageSource::Path("guests/Image".into()),
                initrd: None,
                cmdline: String::new(),
                on_fault: OnFault::Exception,
                nvme: None,
                devices: Vec::new(),
                role: Role::Tenant,
                boot: BootProtocol::Linux,
                firmware_env: Vec::new(),
                firmware_network_env: Vec::new(),
                redfish_tls: None,
            }
        );
    }

    #[test]
    fn probe_is_a_built_in() {
        let plan = Plan::from_toml(&minimal_with("")).unwrap();
        assert_eq!(plan.slices[0].kernel, ImageSource::BuiltIn(BuiltIn::Probe));
    }

    #[test]
    fn syntax_error_has_the_line() {
        let text = error("[[slice]]\nname = \"a\"\ncores = = 2\n");
        assert!(text.starts_with("plan: line 3: "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn empty_text_has_no_slices() {
        assert_eq!(error(""), "plan: no [[slice]] defined");
        assert_eq!(error("slice = []"), "plan: no [[slice]] defined");
    }

    #[test]
    fn slice_must_be_an_array_of_tables() {
        assert_eq!(
            error("slice = 3"),
            "plan: expected [[slice]] tables, found integer"
        );
        assert_eq!(
            error("slice = [3]"),
            "slice #1: expected a table ([[slice]]), found integer"
        );
    }

    #[test]
    fn unknown_top_level_field() {
        assert_eq!(
            error("slices = 1"),
            "plan: slices: unknown field (expected slice)"
        );
    }

    #[test]
    fn unknown_slice_field_names_slice_and_field() {
        assert_eq!(
            error(&one_slice("memroy = \"1G\"")),
            "slice \"web-0\": memroy: unknown field (expected one of name, cores, memory, kernel, \
             initrd, cmdline, on-fault, role, staging, redfish-certificate, redfish-key, nvme, device, firmware)"
        );
    }

    #[test]
    fn unknown_field_is_reported_before_a_missing_one() {
        let text = error("[[slice]]\nnmae = \"web-0\"\n");
        assert!(text.starts_with("slice #1: nmae: unknown field"), "{text}");
    }

    #[test]
    fn nvme_direct_queues() {
        let plan = Plan::from_toml(&minimal_with(
            "[slice.nvme]\nqueues = 1\nsize = \"1MiB\"\ndirect-queues = true",
        ));
        assert!(plan.unwrap().slices[0].nvme.as_ref().unwrap().direct);
        let plan = Plan::from_toml(&minimal_with("[slice.nvme]\nqueues = 1\nsize = \"1MiB\""));
        assert!(
            !plan.unwrap().slices[0].nvme.as_ref().unwrap().direct,
            "off unless asked"
        );
        assert_eq!(
            error(&minimal_with(
                "[slice.nvme]\nqueues = 1\nsize = \"1MiB\"\ndirect-queues = \"yes\""
            )),
            "slice \"web-0\": nvme.direct-queues: expected true or false, found string"
        );
    }

    #[test]
    fn nvme_direct_queues_refused_with_devices() {
        assert_eq!(
            error(&minimal_with(
                "[slice.nvme]\nqueues = 1\nsize = \"1MiB\"\ndirect-queues = true\n[[slice.device]]\npci = \"00:03.0\""
            )),
            "slice \"web-0\": nvme.direct-queues: cannot be true on a slice with [[slice.device]] functions (their DMA could write the queues' completions)"
        );
    }

    #[test]
    fn unknown_nvme_field() {
        let text = error(&minimal_with(
            "[slice.nvme]\nqueues = 1\nsize = \"1G\"\nqeues = 2",
        ));
        assert_eq!(
            text,
            "slice \"web-0\": nvme.qeues: unknown field (expected one of queues, size, direct-queues)"
        );
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            error("[[slice]]\ncores = 1"),
            "slice #1: name: missing (this field is required)"
        );
        assert_eq!(
            error(&one_slice("")),
            "slice \"web-0\": cores: missing (this field is required)"
        );
        assert!(error(&one_slice("cores = 1")).starts_with("slice \"web-0\": memory: missing"));
        assert!(
            error(&one_slice("cores = 1\nmemory = 4096"))
                .starts_with("slice \"web-0\": kernel: missing")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nsize = 4096"))
                .starts_with("slice \"web-0\": nvme.queues: missing")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = 1"))
                .starts_with("slice \"web-0\": nvme.size: missing")
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            error("[[slice]]\nname = 5"),
            "slice #1: name: expected a string, found integer"
        );
        assert_eq!(
            error(&one_slice("cores = \"2\"")),
            "slice \"web-0\": cores: expected a core count or a list of core indexes, found string"
        );
        assert_eq!(
            error(&one_slice("cores = [1, \"2\"]")),
            "slice \"web-0\": cores: expected core indexes (integers), found string"
        );
        assert!(error(&one_slice("cores = 1\nmemory = 1.5")).ends_with("found float"));
        assert!(
            error(&minimal_with("cmdline = 1"))
                .starts_with("slice \"web-0\": cmdline: expected a string")
        );
        assert!(error(&minimal_with("on-fault = true")).ends_with("found boolean"));
        assert!(
            error(&minimal_with("nvme = 1")).starts_with("slice \"web-0\": nvme: expected a table")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = \"1\"\nsize = 1"))
                .ends_with("found string")
        );
    }

    #[test]
    fn out_of_range_integers() {
        assert_eq!(
            error(&one_slice("cores = -1")),
            "slice \"web-0\": cores: -1 is out of range (must be 1 to 4294967295)"
        );
        assert!(error(&one_slice("cores = [4294967296]")).contains("4294967296 is out of range"));
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = -2\nsize = 4096"))
                .contains("-2 is out of range")
        );
    }

    #[test]
    fn bad_name_is_reported_by_position() {
        let text =
            error("[[slice]]\nname = \"Web_0\"\ncores = 1\nmemory = 4096\nkernel = \"probe\"");
        assert!(
            text.starts_with("slice #1: name: \"Web_0\" is not a valid name"),
            "{text}"
        );
    }

    fn linux(name: &str, extra: &str) -> String {
        format!(
            "[[slice]]\nname = \"{name}\"\ncores = 1\nmemory = \"256M\"\nkernel = \"linux\"\n{extra}\n"
        )
    }

    #[test]
    fn role_and_staging() {
        let plan = Plan::from_toml(&linux("m", "role = \"manager\"")).unwrap();
        assert_eq!(
            plan.slices[0].role,
            Role::Manager {
                staging: DEFAULT_STAGING
            }
        );
        assert_eq!(plan.manager(), Some(0));
        let plan = Plan::from_toml(&linux("m", "role = \"manager\"\nstaging = \"64MiB\"")).unwrap();
        assert_eq!(plan.slices[0].role, Role::Manager { staging: 64 << 20 });
        let plan = Plan::from_toml(&linux("t", "role = \"tenant\"")).unwrap();
        assert_eq!(plan.slices[0].role, Role::Tenant);
        assert_eq!(plan.manager(), None);
    }

    #[test]
    fn the_managers_redfish_tls_files() {
        let plan = Plan::from_toml(&linux(
            "m",
            "role = \"manager\"\nredfish-certificate = \"tls/node.crt\"\nredfish-key = \"tls/node.key\"",
        ))
        .unwrap();
        assert_eq!(
            plan.slices[0].redfish_tls,
            Some(RedfishTls {
                certificate: "tls/node.crt".into(),
                key: "tls/node.key".into()
            })
        );
        assert_eq!(
            Plan::from_toml(&linux("m", "role = \"manager\""))
                .unwrap()
                .slices[0]
                .redfish_tls,
            None
        );
        assert_eq!(
            error(&linux(
                "m",
                "role = \"manager\"\nredfish-certificate = \"a.crt\""
            )),
            "slice \"m\": redfish-key: give both redfish-certificate and redfish-key, or neither"
        );
        assert_eq!(
            error(&linux("m", "role = \"manager\"\nredfish-key = \"a.key\"")),
            "slice \"m\": redfish-certificate: give both redfish-certificate and redfish-key, or neither"
        );
        assert_eq!(
            error(&linux(
                "m",
                "role = \"manager\"\nredfish-certificate = \"\"\nredfish-key = \"k\""
            )),
            "slice \"m\": redfish-certificate: empty path"
        );
        assert_eq!(
            error(&linux(
                "t",
                "redfish-certificate = \"a.crt\"\nredfish-key = \"a.key\""
            )),
            "slice \"t\": redfish-certificate: only the manager (role = \"manager\") runs the Redfish service"
        );
    }

    #[test]
    fn role_errors() {
        assert_eq!(
            error(&linux("m", "role = \"boss\"")),
            "slice \"m\": role: \"boss\" is not a role (expected \"tenant\" or \"manager\")"
        );
        assert_eq!(
            error(&linux("t", "staging = \"64MiB\"")),
            "slice \"t\": staging: only the manager (role = \"manager\") has a staging pool"
        );
        let two = linux("a", "role = \"manager\"") + &linux("b", "role = \"manager\"");
        assert_eq!(
            error(&two),
            "slice \"b\": role: slice \"a\" is the manager already (a node has at most one)"
        );
        assert_eq!(
            error(&linux("m", "role = \"manager\"\nstaging = \"3MiB\"")),
            "slice \"m\": staging: 3 MiB is not a staging pool size (a multiple of 2 MiB from 4 MiB to 16 GiB)"
        );
        let probe = Plan::from_toml(&minimal_with("role = \"manager\"")).unwrap();
        assert_eq!(
            probe.check_manager_kernel().unwrap_err().to_string(),
            "slice \"web-0\": kernel: the manager must run Linux (kernel = \"linux\" or a Linux Image), not the probe or firmware"
        );
    }

    #[test]
    fn duplicate_name() {
        let text = format!("{}{}", minimal_with(""), minimal_with(""));
        assert_eq!(
            error(&text),
            "slice \"web-0\": name: already used by slice #1"
        );
    }

    #[test]
    fn zero_cores() {
        assert!(
            error(&one_slice("cores = 0\nmemory = 4096\nkernel = \"probe\""))
                .contains("cores: needs at least 1")
        );
        assert!(
            error(&one_slice("cores = []\nmemory = 4096\nkernel = \"probe\""))
                .contains("cores: needs at least 1")
        );
    }

    #[test]
    fn core_listed_twice() {
        let first = one_slice("cores = [1, 2]\nmemory = 4096\nkernel = \"probe\"");
        let second = "[[slice]]\nname = \"db\"\ncores = [2]\nmemory = 4096\nkernel = \"probe\"\n";
        assert_eq!(
            error(&(first + second)),
            "slice \"db\": cores: core 2 is already given to slice \"web-0\""
        );
    }

    #[test]
    fn sizes() {
        assert!(
            error(&one_slice("cores = 1\nmemory = 0\nkernel = \"probe\""))
                .contains("memory: must be more than 0")
        );
        assert!(
            error(&one_slice("cores = 1\nmemory = -4096\nkernel = \"probe\""))
                .contains("memory: \"-4096\": sizes cannot be negative")
        );
        assert!(
            error(&one_slice(
                "cores = 1\nmemory = \"1.5G\"\nkernel = \"probe\""
            ))
            .contains("memory: \"1.5G\": fractions")
        );
        assert!(
            error(&one_slice(
                "cores = 1\nmemory = \"1GB\"\nkernel = \"probe\""
            ))
            .contains("unknown unit \"GB\"")
        );
        assert!(
            error(&one_slice("cores = 1\nmemory = 5000\nkernel = \"probe\""))
                .contains("memory: 5000 bytes is not a multiple of 4 KiB")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = 1\nsize = 0"))
                .contains("nvme.size: must be more than 0")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = 1\nsize = \"1000\""))
                .contains("nvme.size: 1000 bytes")
        );
        assert!(
            error(&minimal_with("[slice.nvme]\nqueues = 0\nsize = 4096"))
                .contains("nvme.queues: needs at least 1 queue")
        );
    }

    #[test]
    fn on_fault_values() {
        assert!(
            error(&minimal_with("on-fault = \"reboot\""))
                .contains("on-fault: \"reboot\" is not a policy")
        );
        assert_eq!(
            Plan::from_toml(&minimal_with("on-fault = \"stop\""))
                .unwrap()
                .slices[0]
                .on_fault,
            OnFault::Stop
        );
        assert_eq!(
            Plan::from_toml(&minimal_with("")).unwrap().slices[0].on_fault,
            OnFault::Exception,
            "hardware behaviour by default"
        );
    }

    #[test]
    fn firmware_slices_boot_u_boot_and_take_no_cmdline_or_initrd() {
        let plan = Plan::from_toml(&one_slice(
            "cores = 1\nmemory = \"256M\"\nkernel = \"firmware\"",
        ))
        .unwrap();
        plan.validate().unwrap();
        assert_eq!(
            plan.slices[0].kernel,
            ImageSource::BuiltIn(BuiltIn::Firmware)
        );
        assert_eq!(plan.slices[0].boot, BootProtocol::Firmware);
        let with = |extra: &str| {
            let text = one_slice(&format!(
                "cores = 1\nmemory = \"256M\"\nkernel = \"firmware\"\n{extra}"
            ));
            Plan::from_toml(&text).unwrap_err().to_string()
        };
        assert!(
            with("cmdline = \"quiet\"")
                .starts_with("slice \"web-0\": cmdline: a slice booting firmware")
        );
        assert!(
            with("initrd = \"x.cpio\"")
                .starts_with("slice \"web-0\": initrd: a slice booting firmware")
        );
        assert_eq!(
            Plan::from_toml(&minimal_with("")).unwrap().slices[0].boot,
            BootProtocol::Linux
        );
    }

    #[test]
    fn firmware_environment() {
        let firmware = |extra: &str| {
            one_slice(&format!(
                "cores = 1\nmemory = \"256M\"\nkernel = \"firmware\"\n{extra}"
            ))
        };
        let plan = Plan::from_toml(&firmware(
            "[slice.firmware.env]\nbootdelay = \"0\"\nboot_targets = \"nvme0 dhcp\"",
        ))
        .unwrap();
        assert_eq!(
            plan.slices[0].firmware_env,
            [
                ("boot_targets".to_string(), "nvme0 dhcp".to_string()),
                ("bootdelay".to_string(), "0".to_string())
            ]
        );
        let inline =
            Plan::from_toml(&firmware("firmware = { env = { bootdelay = \"0\" } }")).unwrap();
        assert_eq!(inline.slices[0].firmware_env.len(), 1);
        let refused = |text: &str| Plan::from_toml(text).unwrap_err().to_string();
        assert_eq!(
            refused(&firmware("[slice.firmware.env]\nbootdelay = 0")),
            "slice \"web-0\": firmware.env: expected a string, found integer"
        );
        assert!(
            refused(&firmware("[slice.firmware]\nenv = 1"))
                .starts_with("slice \"web-0\": firmware.env: expected a table of strings")
        );
        assert_eq!(
            refused(&firmware("[slice.firmware]\nenvs = {}")),
            "slice \"web-0\": firmware.envs: unknown field (expected env)"
        );
        assert_eq!(
            refused(&firmware("[slice.firmware.env]\n\"a b\" = \"1\"")),
            "slice \"web-0\": firmware.env: \"a b\" is not a variable name (1 to 64 of A-Z a-z 0-9 _ . -)"
        );
        assert!(
            refused(&minimal_with("[slice.firmware.env]\nbootdelay = \"0\""))
                .starts_with("slice \"web-0\": firmware: only a slice booting firmware")
        );
    }

    #[test]
    fn image_paths() {
        assert_eq!(
            error(&one_slice("cores = 1\nmemory = 4096\nkernel = \"\"")),
            "slice \"web-0\": kernel: empty path"
        );
        assert_eq!(
            error(&minimal_with("initrd = \"\"")),
            "slice \"web-0\": initrd: empty path"
        );
        assert!(
            error(&minimal_with("initrd = \"linux\""))
                .starts_with("slice \"web-0\": initrd: \"linux\" is a built-in kernel")
        );
    }

    #[test]
    fn cmdline_with_nul() {
        assert!(
            error(&minimal_with("cmdline = \"a\\u0000b\"")).contains("cmdline: contains a NUL")
        );
    }

    fn with_devices(tables: &str) -> String {
        minimal_with(tables)
    }

    #[test]
    fn device_addresses_in_every_accepted_spelling() {
        let plan = Plan::from_toml(&with_devices(
            "[[slice.device]]\npci = \"00:1F.7\"\n[[slice.device]]\npci = \"0000:02:00.0\"",
        ))
        .unwrap();
        assert_eq!(
            plan.slices[0].devices,
            [
                DeviceRequest::Pci(PciAddress::new(0, 0x1f, 7).unwrap()),
                DeviceRequest::Pci(PciAddress::new(2, 0, 0).unwrap()),
            ]
        );
    }

    #[test]
    fn device_list_must_be_tables() {
        assert_eq!(
            error(&with_devices("[slice.device]\npci = \"00:03.0\"")),
            "slice \"web-0\": device: expected [[slice.device]] tables, found table"
        );
        assert_eq!(
            error(&with_devices("device = [\"00:03.0\"]")),
            "slice \"web-0\": device #1: expected a table ([[slice.device]]), found string"
        );
    }

    #[test]
    fn unknown_device_field() {
        assert_eq!(
            error(&with_devices(
                "[[slice.device]]\nclass = \"net\"\n[[slice.device]]\npci = \"00:03.0\"\nbar = 1"
            )),
            "slice \"web-0\": device #2: bar: unknown field (expected one of pci, class)"
        );
    }

    #[test]
    fn device_needs_exactly_one_of_pci_and_class() {
        assert!(
            error(&with_devices("[[slice.device]]"))
                .starts_with("slice \"web-0\": device #1: needs pci = \"BB:DD.F\"")
        );
        assert!(
            error(&with_devices(
                "[[slice.device]]\npci = \"00:03.0\"\nclass = \"net\""
            ))
            .starts_with("slice \"web-0\": device #1: has both pci and class")
        );
    }

    #[test]
    fn bad_device_values() {
        assert_eq!(
            error(&with_devices("[[slice.device]]\npci = \"0:3.0\"")),
            "slice \"web-0\": device #1: pci: \"0:3.0\" is not a PCI address (expected \
             bus:device.function in hex, two digits each for bus and device, like \"00:03.0\")"
        );
        assert_eq!(
            error(&with_devices("[[slice.device]]\npci = \"00:03.8\"")),
            "slice \"web-0\": device #1: pci: \"00:03.8\" is not a PCI address (function 8 is above 7)"
        );
        assert_eq!(
            error(&with_devices("[[slice.device]]\npci = 3")),
            "slice \"web-0\": device #1: pci: expected a PCI address string (\"BB:DD.F\"), found integer"
        );
        assert_eq!(
            error(&with_devices("[[slice.device]]\nclass = \"gpu\"")),
            "slice \"web-0\": device #1: class: \"gpu\" is not a device class (expected \"net\" or \"nvme\")"
        );
        assert_eq!(
            error(&with_devices("[[slice.device]]\nclass = 2")),
            "slice \"web-0\": device #1: class: expected a string, found integer"
        );
    }

    #[test]
    fn device_asked_for_twice() {
        let text = format!(
            "{}[[slice]]\nname = \"db\"\ncores = 1\nmemory = 4096\nkernel = \"probe\"\n\
             [[slice.device]]\npci = \"00:03.0\"\n",
            with_devices("[[slice.device]]\npci = \"00:03.0\"")
        );
        assert_eq!(
            error(&text),
            "slice \"db\": device 00:03.0: already given to slice \"web-0\""
        );
    }

    #[test]
    fn line_of_counts_from_one() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
