//! The service against the control interface's fake hypervisor: what Ironic-like clients do,
//! and what hostile ones try.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use microvisor_control::fake::{FakeHypervisor, fake_kernel};
use microvisor_control::{Client, Pacing};

use super::*;

const PASSWORD: &str = "correct-horse";

fn service() -> Service<FakeHypervisor> {
    service_of(FakeHypervisor::default_node())
}

fn service_of(node: FakeHypervisor) -> Service<FakeHypervisor> {
    let client = Client::new(node).with_pacing(fast());
    Service::new(
        client,
        Config {
            user: "admin".into(),
            password: PASSWORD.into(),
            shutdown_timeout: Duration::from_secs(5),
            media_budget: MEDIA_BUDGET,
        },
    )
    .unwrap()
}

/// No waiting between polls: the fake's time moves only when the test moves it.
fn fast() -> Pacing {
    Pacing {
        poll: Duration::ZERO,
        console_retry: Duration::ZERO,
        console_stalls: 3,
    }
}

/// `Basic admin:correct-horse`.
fn basic() -> String {
    "Basic YWRtaW46Y29ycmVjdC1ob3JzZQ==".into()
}

fn call(s: &mut Service<FakeHypervisor>, request: Request) -> Response {
    match s.handle(&request, 0) {
        Outcome::Respond(r) => r,
        Outcome::Fetch(job) => panic!("unexpected fetch {job:?}"),
    }
}

fn get(s: &mut Service<FakeHypervisor>, path: &str) -> Response {
    call(
        s,
        Request::new(Method::Get, path).header("Authorization", &basic()),
    )
}

fn post(s: &mut Service<FakeHypervisor>, path: &str, body: Value) -> Response {
    call(
        s,
        Request::new(Method::Post, path)
            .header("Authorization", &basic())
            .json(&body),
    )
}

fn patch(s: &mut Service<FakeHypervisor>, path: &str, body: Value) -> Response {
    call(
        s,
        Request::new(Method::Patch, path)
            .header("Authorization", &basic())
            .json(&body),
    )
}

fn message_id(r: &Response) -> String {
    r.body_json()["error"]["@Message.ExtendedInfo"][0]["MessageId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn fake(s: &mut Service<FakeHypervisor>) -> &mut FakeHypervisor {
    s.client_mut().transport_mut()
}

#[test]
fn the_root_is_open_and_everything_else_needs_credentials() {
    let mut s = service();
    let root = call(&mut s, Request::new(Method::Get, "/redfish/v1/"));
    assert_eq!(root.status, 200);
    assert_eq!(root.body_json()["RedfishVersion"], "1.15.0");
    assert_eq!(root.get_header("OData-Version"), Some("4.0"));
    assert_eq!(
        call(&mut s, Request::new(Method::Get, "/redfish/v1")).status,
        200
    );
    assert_eq!(
        call(&mut s, Request::new(Method::Get, "/redfish")).body_json()["v1"],
        "/redfish/v1/"
    );
    assert_eq!(
        call(&mut s, Request::new(Method::Get, "/redfish/v1/$metadata")).status,
        200
    );
    for path in [
        "/redfish/v1/Systems",
        "/redfish/v1/Systems/web",
        "/redfish/v1/Managers/node",
    ] {
        let r = call(&mut s, Request::new(Method::Get, path));
        assert_eq!(r.status, 401, "{path}");
        assert!(r.get_header("WWW-Authenticate").is_some());
        assert_eq!(message_id(&r), "Base.1.8.NoValidSession");
        let wrong = call(
            &mut s,
            Request::new(Method::Get, path).header("Authorization", "Basic YWRtaW46bm8="),
        );
        assert_eq!(wrong.status, 401);
        assert_eq!(
            wrong.body, r.body,
            "a wrong password says no more than none"
        );
    }
    // Nothing is done for an unauthenticated action.
    let r = call(
        &mut s,
        Request::new(
            Method::Post,
            "/redfish/v1/Systems/web/Actions/ComputerSystem.Reset",
        )
        .json(&json!({"ResetType": "ForceOff"})),
    );
    assert_eq!(r.status, 401);
    assert_eq!(fake(&mut s).state("web"), "on");
}

#[test]
fn every_slice_but_the_manager_is_a_system() {
    let mut s = service();
    let systems = get(&mut s, "/redfish/v1/Systems").body_json();
    let members: Vec<&str> = systems["Members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["@odata.id"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [
            "/redfish/v1/Systems/web",
            "/redfish/v1/Systems/db",
            "/redfish/v1/Systems/probe"
        ]
    );
    assert_eq!(systems["Members@odata.count"], 3);
    assert_eq!(get(&mut s, "/redfish/v1/Systems/ctl").status, 404);
    assert_eq!(get(&mut s, "/redfish/v1/Systems/nope").status, 404);
    assert_eq!(get(&mut s, "/redfish/v1/Systems/a%2Fb").status, 404);
}

#[test]
fn a_system_shows_what_the_slice_has() {
    let mut s = service();
    let r = get(&mut s, "/redfish/v1/Systems/web");
    assert_eq!(r.status, 200);
    let web = r.body_json();
    assert_eq!(web["Id"], "web");
    assert_eq!(web["PowerState"], "On");
    assert_eq!(web["SystemType"], "PhysicallyPartitioned");
    assert_eq!(web["ProcessorSummary"]["CoreCount"], 2);
    assert_eq!(web["MemorySummary"]["TotalSystemMemoryGiB"], 0.5);
    assert_eq!(
        web["Links"]["ManagedBy"][0]["@odata.id"],
        "/redfish/v1/Managers/node"
    );
    assert_eq!(
        web["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"][0],
        "On"
    );
    assert_eq!(r.get_header("ETag"), web["@odata.etag"].as_str());
    let cpu = get(&mut s, "/redfish/v1/Systems/web/Processors/CPU").body_json();
    assert_eq!(cpu["InstructionSet"], "ARM-A64");
    assert_eq!(cpu["TotalThreads"], 2);
    let disk = get(&mut s, "/redfish/v1/Systems/web/SimpleStorage/NVMe").body_json();
    assert_eq!(disk["Devices"][0]["CapacityBytes"], 4u64 << 30);
    let drive = get(&mut s, "/redfish/v1/Systems/web/Storage/NVMe/Drives/Share").body_json();
    assert_eq!(drive["CapacityBytes"], 4u64 << 30);
    let nic = get(&mut s, "/redfish/v1/Systems/web/EthernetInterfaces/NIC0").body_json();
    assert_eq!(nic["MACAddress"], "52:54:00:6d:76:00");
    assert_eq!(nic["LinkStatus"], "LinkUp");
    assert_eq!(
        get(&mut s, "/redfish/v1/Systems/web/EthernetInterfaces/NIC1").status,
        404
    );
    assert_eq!(
        get(&mut s, "/redfish/v1/Systems/web/EthernetInterfaces/NIC00").status,
        404
    );
    // A slice without a share has no storage below its collections.
    let probe = get(&mut s, "/redfish/v1/Systems/probe/Storage").body_json();
    assert_eq!(probe["Members@odata.count"], 0);
    assert_eq!(
        get(&mut s, "/redfish/v1/Systems/probe/Storage/NVMe").status,
        404
    );
    let manager = get(&mut s, "/redfish/v1/Managers/node").body_json();
    assert_eq!(
        manager["Links"]["ManagerForServers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// Every `@odata.id` any resource names answers 200 (no dead links), and each resource's
/// own `@odata.id` is the URI it was read at.
#[test]
fn every_link_resolves() {
    let mut s = service();
    let mut todo = vec!["/redfish/v1/".to_string()];
    let mut seen = BTreeSet::new();
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = get(&mut s, &path);
        assert_eq!(
            r.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let body = r.body_json();
        assert_eq!(body["@odata.id"], path.as_str(), "{path}");
        assert!(body["@odata.type"].as_str().is_some(), "{path}");
        let mut stack = vec![body];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(map) => {
                    for (k, v) in map {
                        if k == "@odata.id" {
                            todo.push(v.as_str().unwrap().to_string());
                        } else if k == "target" {
                            assert!(v.as_str().unwrap().contains("/Actions/"));
                        } else {
                            stack.push(v);
                        }
                    }
                }
                Value::Array(items) => stack.extend(items),
                _ => {}
            }
        }
    }
    assert!(seen.len() > 40, "{seen:?}");
}

#[test]
fn the_boot_override_is_patched_with_its_etag() {
    let mut s = service();
    let etag = get(&mut s, "/redfish/v1/Systems/db")
        .get_header("ETag")
        .unwrap()
        .to_string();
    let body = json!({"Boot": {"BootSourceOverrideTarget": "Hdd",
        "BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "UEFI"}});
    let r = call(
        &mut s,
        Request::new(Method::Patch, "/redfish/v1/Systems/db")
            .header("Authorization", &basic())
            .header("If-Match", &etag)
            .json(&body),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body_json()["Boot"]["BootSourceOverrideTarget"], "Hdd");
    // The old ETag no longer matches.
    let r = call(
        &mut s,
        Request::new(Method::Patch, "/redfish/v1/Systems/db")
            .header("Authorization", &basic())
            .header("If-Match", &etag)
            .json(&body),
    );
    assert_eq!(r.status, 412);
    assert_eq!(message_id(&r), "Base.1.8.PreconditionFailed");
    for (bad, id) in [
        (
            json!({"Boot": {"BootSourceOverrideTarget": "Floppy"}}),
            "PropertyValueNotInList",
        ),
        (
            json!({"Boot": {"BootSourceOverrideTarget": 3}}),
            "PropertyValueNotInList",
        ),
        (
            json!({"Boot": {"BootSourceOverrideMode": "Legacy"}}),
            "PropertyValueNotInList",
        ),
        (json!({"Boot": {"Nope": 1}}), "PropertyUnknown"),
        (json!({"Boot": "Hdd"}), "PropertyValueTypeError"),
        (json!({"PowerState": "Off"}), "PropertyUnknown"),
        (
            json!({"Boot": {"BootSourceOverrideTarget": "Cd", "Oops": 1}}),
            "PropertyUnknown",
        ),
    ] {
        let r = patch(&mut s, "/redfish/v1/Systems/db", bad.clone());
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(message_id(&r), format!("Base.1.8.{id}"), "{bad}");
    }
    // Nothing of a refused PATCH was applied.
    let db = get(&mut s, "/redfish/v1/Systems/db").body_json();
    assert_eq!(db["Boot"]["BootSourceOverrideTarget"], "Hdd");
    assert_eq!(db["Boot"]["BootSourceOverrideEnabled"], "Continuous");
    for (body, id) in [(&b"{"[..], "MalformedJSON"), (b"[1]", "MalformedJSON")] {
        let mut request =
            Request::new(Method::Patch, "/redfish/v1/Systems/db").header("Authorization", &basic());
        request.body = body.to_vec();
        let r = call(&mut s, request);
        assert_eq!(r.status, 400);
        assert_eq!(message_id(&r), format!("Base.1.8.{id}"));
    }
}

#[test]
fn reset_types_drive_the_slice() {
    let mut s = service();
    let reset = "/redfish/v1/Systems/web/Actions/ComputerSystem.Reset";
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceOff"})).status,
        204
    );
    assert_eq!(fake(&mut s).state("web"), "off");
    assert_eq!(
        get(&mut s, "/redfish/v1/Systems/web").body_json()["PowerState"],
        "Off"
    );
    // Idempotent where Redfish says so.
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceOff"})).status,
        204
    );
    assert_eq!(post(&mut s, reset, json!({"ResetType": "On"})).status, 204);
    assert_eq!(fake(&mut s).state("web"), "on");
    let starts = fake(&mut s).starts("web");
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceRestart"})).status,
        204
    );
    assert_eq!(fake(&mut s).starts("web"), starts + 1);
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "PowerCycle"})).status,
        204
    );
    s.tick(50);
    assert_eq!(fake(&mut s).starts("web"), starts + 2);
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "GracefulShutdown"})).status,
        204
    );
    assert_eq!(
        get(&mut s, "/redfish/v1/Systems/web").body_json()["PowerState"],
        "PoweringOff"
    );
    fake(&mut s).advance(1_000);
    assert_eq!(fake(&mut s).state("web"), "off");
    // Graceful restart: the power key, then a start once it is off.
    assert_eq!(post(&mut s, reset, json!({"ResetType": "On"})).status, 204);
    let starts = fake(&mut s).starts("web");
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "GracefulRestart"})).status,
        204
    );
    s.tick(100);
    assert_eq!(fake(&mut s).state("web"), "shutting-down");
    fake(&mut s).advance(1_000);
    s.tick(1_200);
    assert_eq!(fake(&mut s).state("web"), "on");
    assert_eq!(fake(&mut s).starts("web"), starts + 1);
    // A ForceOff while a graceful restart waits for the slice to be off: it stays off.
    let starts = fake(&mut s).starts("web");
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "GracefulRestart"})).status,
        204
    );
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceOff"})).status,
        204
    );
    fake(&mut s).advance(1_000);
    s.tick(2_500);
    s.tick(2_600);
    assert_eq!(
        fake(&mut s).state("web"),
        "off",
        "the restart was cancelled"
    );
    assert_eq!(fake(&mut s).starts("web"), starts);
    assert_eq!(post(&mut s, reset, json!({"ResetType": "On"})).status, 204);
    // The other slices never moved.
    assert_eq!(fake(&mut s).starts("db"), 1);
    for (bad, id) in [
        (json!({}), "ActionParameterMissing"),
        (json!({"ResetType": "Nmi"}), "ActionParameterValueNotInList"),
        (json!({"ResetType": 1}), "ActionParameterValueNotInList"),
        (
            json!({"ResetType": "On", "Force": true}),
            "ActionParameterUnknown",
        ),
    ] {
        let r = post(&mut s, reset, bad.clone());
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(message_id(&r), format!("Base.1.8.{id}"), "{bad}");
    }
    let r = call(
        &mut s,
        Request::new(Method::Get, reset).header("Authorization", &basic()),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.get_header("Allow"), Some("POST"));
}

#[test]
fn sessions_log_in_and_out() {
    let mut s = service();
    let login = |s: &mut Service<FakeHypervisor>, password: &str| {
        call(
            s,
            Request::new(Method::Post, "/redfish/v1/SessionService/Sessions")
                .json(&json!({"UserName": "admin", "Password": password})),
        )
    };
    assert_eq!(login(&mut s, "wrong").status, 401);
    let r = login(&mut s, PASSWORD);
    assert_eq!(r.status, 201);
    let token = r.get_header("X-Auth-Token").unwrap().to_string();
    let location = r.get_header("Location").unwrap().to_string();
    assert_eq!(location, "/redfish/v1/SessionService/Sessions/1");
    assert_eq!(r.body_json()["Password"], Value::Null);
    let with_token =
        |path: &str, method: Method| Request::new(method, path).header("X-Auth-Token", &token);
    assert_eq!(
        call(&mut s, with_token("/redfish/v1/Systems", Method::Get)).status,
        200
    );
    let sessions = call(
        &mut s,
        with_token("/redfish/v1/SessionService/Sessions", Method::Get),
    );
    assert_eq!(sessions.body_json()["Members@odata.count"], 1);
    assert_eq!(
        call(&mut s, with_token(&location, Method::Delete)).status,
        204
    );
    assert_eq!(
        call(&mut s, with_token("/redfish/v1/Systems", Method::Get)).status,
        401
    );
    let r = call(
        &mut s,
        Request::new(Method::Post, "/redfish/v1/SessionService/Sessions")
            .json(&json!({"UserName": "admin"})),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn the_password_can_be_changed() {
    let mut s = service();
    let account = get(&mut s, "/redfish/v1/AccountService/Accounts/1");
    assert_eq!(account.body_json()["UserName"], "admin");
    assert_eq!(account.body_json()["Password"], Value::Null);
    assert_eq!(
        patch(
            &mut s,
            "/redfish/v1/AccountService/Accounts/1",
            json!({"Password": "short"})
        )
        .status,
        400
    );
    assert_eq!(
        patch(
            &mut s,
            "/redfish/v1/AccountService/Accounts/1",
            json!({"UserName": "root"})
        )
        .status,
        400
    );
    assert_eq!(
        patch(
            &mut s,
            "/redfish/v1/AccountService/Accounts/1",
            json!({"Password": "new-password-1"})
        )
        .status,
        200
    );
    assert_eq!(get(&mut s, "/redfish/v1/Systems").status, 401);
    let r = call(
        &mut s,
        Request::new(Method::Get, "/redfish/v1/Systems")
            .header("Authorization", "Basic YWRtaW46bmV3LXBhc3N3b3JkLTE="),
    );
    assert_eq!(r.status, 200);
}

fn arm64_image() -> Vec<u8> {
    fake_kernel(64 * 1024)
}

/// The media budget of the tests' service.
const MEDIA_BUDGET: u64 = 8 << 20;

/// `InsertMedia` of `url` into `system`'s CD, as the transport sees it.
fn insert_media(s: &mut Service<FakeHypervisor>, system: &str, url: &str) -> Outcome {
    let path =
        format!("/redfish/v1/Systems/{system}/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia");
    let request = Request::new(Method::Post, &path)
        .header("Authorization", &basic())
        .json(&json!({"Image": url}));
    s.handle(&request, 0)
}

#[test]
fn virtual_media_of_all_systems_stays_within_one_budget() {
    // Found in review: each system could hold a kernel and initrd up to the pool's size,
    // and every fetch in flight as much again, in the manager's memory.
    let mut s = service();
    let Outcome::Fetch(web) = insert_media(&mut s, "web", "http://10.0.2.2/a.iso") else {
        panic!("InsertMedia fetches");
    };
    assert_eq!(web.max_bytes, MEDIA_BUDGET, "the whole budget is free");
    // While that fetch may still bring the whole budget, nothing else is fetched.
    let refused = insert_media(&mut s, "db", "http://10.0.2.2/b.iso");
    assert!(
        matches!(refused, Outcome::Respond(ref r) if r.status == 409),
        "{refused:?}"
    );
    // It brought 3 MiB and 64 KiB: the rest is free again.
    let image = BootImage {
        kernel: arm64_image(),
        initrd: Some(vec![7; 3 << 20]),
        cmdline: String::new(),
        source: "grub.cfg".into(),
    };
    let held = (arm64_image().len() + (3 << 20)) as u64;
    assert_eq!(s.media_fetched(&web, Ok(image)).status, 204);
    let Outcome::Fetch(db) = insert_media(&mut s, "db", "http://10.0.2.2/b.iso") else {
        panic!("InsertMedia fetches");
    };
    assert_eq!(db.max_bytes, MEDIA_BUDGET - held);
    // Ejected while it is fetched: its share is free at once, and the late result is
    // discarded without counting.
    let eject = "/redfish/v1/Systems/db/VirtualMedia/CD/Actions/VirtualMedia.EjectMedia";
    assert_eq!(post(&mut s, eject, json!({})).status, 204);
    let Outcome::Fetch(again) = insert_media(&mut s, "db", "http://10.0.2.2/b.iso") else {
        panic!("InsertMedia fetches");
    };
    assert_eq!(again.max_bytes, MEDIA_BUDGET - held);
    assert_ne!(again.id, db.id);
    let late = BootImage {
        kernel: arm64_image(),
        initrd: None,
        cmdline: String::new(),
        source: "Image".into(),
    };
    assert_eq!(s.media_fetched(&db, Ok(late)).status, 409);
    // The newer insert's fetch still holds its share.
    assert!(matches!(
        insert_media(&mut s, "probe", "http://10.0.2.2/c.iso"),
        Outcome::Respond(ref r) if r.status == 409
    ));
    // Ejecting web's CD frees what it held.
    let eject_web = "/redfish/v1/Systems/web/VirtualMedia/CD/Actions/VirtualMedia.EjectMedia";
    assert_eq!(post(&mut s, eject_web, json!({})).status, 204);
    let Outcome::Fetch(probe) = insert_media(&mut s, "probe", "http://10.0.2.2/c.iso") else {
        panic!("InsertMedia fetches");
    };
    assert_eq!(probe.max_bytes, held);
}

#[test]
fn a_virtual_cd_boots_once_and_the_slice_goes_back_to_its_own() {
    let mut s = service();
    let media = "/redfish/v1/Systems/db/VirtualMedia/CD";
    let insert = format!("{media}/Actions/VirtualMedia.InsertMedia");
    let reset = "/redfish/v1/Systems/db/Actions/ComputerSystem.Reset";
    assert_eq!(get(&mut s, media).body_json()["Inserted"], false);
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceOff"})).status,
        204
    );
    let r = patch(
        &mut s,
        "/redfish/v1/Systems/db",
        json!({"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Once"}}),
    );
    assert_eq!(r.status, 200);
    // Booting the CD before anything is in it: refused, nothing started.
    assert_eq!(post(&mut s, reset, json!({"ResetType": "On"})).status, 409);
    assert_eq!(fake(&mut s).state("db"), "off");
    let request = Request::new(Method::Post, &insert)
        .header("Authorization", &basic())
        .json(
            &json!({"Image": "http://10.0.2.2/boot.iso", "Inserted": true,
            "WriteProtected": true}),
        );
    let Outcome::Fetch(job) = s.handle(&request, 0) else {
        panic!("InsertMedia fetches");
    };
    assert_eq!(job.url, "http://10.0.2.2/boot.iso");
    // A second insert while the first is fetched: refused.
    assert!(matches!(s.handle(&request, 0), Outcome::Respond(r) if r.status == 409));
    let image = BootImage {
        kernel: arm64_image(),
        initrd: Some(vec![7; 1000]),
        cmdline: "console=ttyAMA0 from-the-cd".into(),
        source: "grub.cfg".into(),
    };
    assert_eq!(s.media_fetched(&job, Ok(image)).status, 204);
    let cd = get(&mut s, media).body_json();
    assert_eq!(cd["Inserted"], true);
    assert_eq!(cd["Image"], "http://10.0.2.2/boot.iso");
    assert_eq!(cd["ImageName"], "boot.iso");
    assert_eq!(post(&mut s, reset, json!({"ResetType": "On"})).status, 204);
    let status = s.client_mut().status("db").unwrap();
    assert_eq!(status.state, SliceState::On);
    let boot = status.boot.unwrap();
    assert_eq!(boot.source, "staged");
    assert_eq!(boot.cmdline.as_deref(), Some("console=ttyAMA0 from-the-cd"));
    // Once: the override is used up, and after the start the slice's own source is back.
    let db = get(&mut s, "/redfish/v1/Systems/db").body_json();
    assert_eq!(db["Boot"]["BootSourceOverrideEnabled"], "Disabled");
    assert_eq!(db["Boot"]["BootSourceOverrideTarget"], "None");
    s.tick(500);
    let boot = s.client_mut().status("db").unwrap().boot.unwrap();
    assert_eq!(boot.source, "flashed");
    assert_eq!(
        post(
            &mut s,
            &format!("{media}/Actions/VirtualMedia.EjectMedia"),
            json!({})
        )
        .status,
        204
    );
    assert_eq!(get(&mut s, media).body_json()["Inserted"], false);
    assert_eq!(fake(&mut s).pool_used(), 0);
}

/// The start lines (`FAKE-BOOT ...`) of `slice` so far.
fn starts(s: &mut Service<FakeHypervisor>, slice: &str) -> Vec<String> {
    let console = String::from_utf8(fake(s).console(slice)).unwrap();
    console
        .lines()
        .filter(|l| l.starts_with(microvisor_control::fake::BOOT_LINE))
        .map(str::to_string)
        .collect()
}

#[test]
fn pxe_is_offered_where_the_firmware_boots_from_the_network_and_is_used_once() {
    use microvisor_control::fake::FakeSliceSpec;
    let mut s = service_of(FakeHypervisor::new(vec![
        FakeSliceSpec::manager("ctl"),
        FakeSliceSpec::firmware("metal").cores(&[1]).nic(
            "01:00.0",
            "00:01.0",
            Some("52:54:00:6d:76:10"),
        ),
        FakeSliceSpec::tenant("web").cores(&[2]).nic(
            "02:00.0",
            "00:01.0",
            Some("52:54:00:6d:76:00"),
        ),
        FakeSliceSpec::firmware("nonic").cores(&[3]),
    ]));
    let allowable = |s: &mut Service<FakeHypervisor>, name: &str| {
        get(s, &format!("/redfish/v1/Systems/{name}")).body_json()["Boot"]
            ["BootSourceOverrideTarget@Redfish.AllowableValues"]
            .clone()
    };
    // A bundled kernel and a firmware without a NIC cannot boot from the network.
    for name in ["web", "nonic"] {
        assert_eq!(
            allowable(&mut s, name),
            json!(["None", "Hdd", "Cd"]),
            "{name}"
        );
        let r = patch(
            &mut s,
            &format!("/redfish/v1/Systems/{name}"),
            json!({"Boot": {"BootSourceOverrideTarget": "Pxe"}}),
        );
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(message_id(&r), "Base.1.8.PropertyValueNotInList");
    }
    assert_eq!(
        allowable(&mut s, "metal"),
        json!(["None", "Pxe", "Hdd", "Cd"])
    );
    // Once: the restart boots from the network, the next one from its own boot order.
    let reset = "/redfish/v1/Systems/metal/Actions/ComputerSystem.Reset";
    let r = patch(
        &mut s,
        "/redfish/v1/Systems/metal",
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
    );
    assert_eq!(r.status, 200);
    let restart = json!({"ResetType": "ForceRestart"});
    assert_eq!(post(&mut s, reset, restart.clone()).status, 204);
    let last = starts(&mut s, "metal").pop().unwrap();
    assert!(last.contains("kernel=u-boot network-first"), "{last}");
    let metal = get(&mut s, "/redfish/v1/Systems/metal").body_json();
    assert_eq!(metal["Boot"]["BootSourceOverrideTarget"], "None");
    s.tick(500);
    assert_eq!(
        s.client_mut().status("metal").unwrap().boot.unwrap().source,
        "flashed"
    );
    assert_eq!(post(&mut s, reset, restart.clone()).status, 204);
    let last = starts(&mut s, "metal").pop().unwrap();
    assert!(!last.contains("network-first"), "{last}");
    // Continuous: every start until Hdd takes over.
    let r = patch(
        &mut s,
        "/redfish/v1/Systems/metal",
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Continuous"}}),
    );
    assert_eq!(r.status, 200);
    for _ in 0..2 {
        assert_eq!(post(&mut s, reset, restart.clone()).status, 204);
        s.tick(1000);
        let last = starts(&mut s, "metal").pop().unwrap();
        assert!(last.contains("network-first"), "{last}");
    }
    let r = patch(
        &mut s,
        "/redfish/v1/Systems/metal",
        json!({"Boot": {"BootSourceOverrideTarget": "Hdd"}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(post(&mut s, reset, restart).status, 204);
    let last = starts(&mut s, "metal").pop().unwrap();
    assert!(!last.contains("network-first"), "{last}");
    assert_eq!(
        s.client_mut().status("metal").unwrap().boot.unwrap().source,
        "flashed"
    );
}

#[test]
fn a_continuous_cd_boots_until_ejected() {
    let mut s = service();
    let insert = "/redfish/v1/Systems/db/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia";
    let request = Request::new(Method::Post, insert)
        .header("Authorization", &basic())
        .json(&json!({"Image": "https://10.0.2.2/k"}));
    let Outcome::Fetch(job) = s.handle(&request, 0) else {
        panic!("InsertMedia fetches");
    };
    let image = BootImage {
        kernel: arm64_image(),
        initrd: None,
        cmdline: String::new(),
        source: "raw arm64 Image".into(),
    };
    assert_eq!(s.media_fetched(&job, Ok(image)).status, 204);
    patch(
        &mut s,
        "/redfish/v1/Systems/db",
        json!({"Boot": {"BootSourceOverrideTarget": "Cd", "BootSourceOverrideEnabled": "Continuous"}}),
    );
    let reset = "/redfish/v1/Systems/db/Actions/ComputerSystem.Reset";
    assert_eq!(
        post(&mut s, reset, json!({"ResetType": "ForceRestart"})).status,
        204
    );
    s.tick(500);
    assert_eq!(
        s.client_mut().status("db").unwrap().boot.unwrap().source,
        "staged"
    );
    assert_eq!(
        post(
            &mut s,
            "/redfish/v1/Systems/db/VirtualMedia/CD/Actions/VirtualMedia.EjectMedia",
            json!({})
        )
        .status,
        204
    );
    assert_eq!(
        s.client_mut().status("db").unwrap().boot.unwrap().source,
        "flashed"
    );
}

#[test]
fn bad_media_is_refused_and_leaves_the_slot_empty() {
    let mut s = service();
    let insert = "/redfish/v1/Systems/db/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia";
    for (bad, status) in [
        (json!({}), 400),
        (json!({"Image": "ftp://x/y"}), 400),
        (json!({"Image": "http://a b/"}), 400),
        (json!({"Image": 7}), 400),
        (json!({"Image": "http://x/", "Inserted": false}), 400),
        (
            json!({"Image": "http://x/", "TransferMethod": "Stream"}),
            400,
        ),
        (json!({"Image": "http://x/", "UserName": "u"}), 400),
    ] {
        let r = post(&mut s, insert, bad.clone());
        assert_eq!(r.status, status, "{bad}");
    }
    let request = Request::new(Method::Post, insert)
        .header("Authorization", &basic())
        .json(&json!({"Image": "http://127.0.0.1/missing.iso"}));
    let Outcome::Fetch(job) = s.handle(&request, 0) else {
        panic!("InsertMedia fetches");
    };
    let r = s.media_fetched(&job, Err("HTTP 404 Not Found".into()));
    assert_eq!(r.status, 400);
    assert!(
        r.body_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("404")
    );
    let cd = get(&mut s, "/redfish/v1/Systems/db/VirtualMedia/CD").body_json();
    assert_eq!(cd["Inserted"], false);
    assert_eq!(cd["Image"], Value::Null);
}

#[test]
fn a_drive_is_erased_only_when_the_slice_is_off() {
    let mut s = service();
    let erase = "/redfish/v1/Systems/web/Storage/NVMe/Drives/Share/Actions/Drive.SecureErase";
    assert_eq!(post(&mut s, erase, json!({})).status, 409);
    post(
        &mut s,
        "/redfish/v1/Systems/web/Actions/ComputerSystem.Reset",
        json!({"ResetType": "ForceOff"}),
    );
    assert_eq!(post(&mut s, erase, json!({})).status, 204);
    let drive = get(&mut s, "/redfish/v1/Systems/web/Storage/NVMe/Drives/Share").body_json();
    assert_eq!(drive["Status"]["State"], "Updating");
    fake(&mut s).advance(1_000);
    let drive = get(&mut s, "/redfish/v1/Systems/web/Storage/NVMe/Drives/Share").body_json();
    assert_eq!(drive["Status"]["State"], "Enabled");
    assert_eq!(
        post(
            &mut s,
            "/redfish/v1/Systems/probe/Storage/NVMe/Drives/Share/Actions/Drive.SecureErase",
            json!({})
        )
        .status,
        404
    );
}

#[test]
fn methods_bodies_and_paths_are_checked() {
    let mut s = service();
    let r = call(
        &mut s,
        Request::new(Method::Delete, "/redfish/v1/Systems/web").header("Authorization", &basic()),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.get_header("Allow"), Some("GET, HEAD, PATCH"));
    let mut big =
        Request::new(Method::Patch, "/redfish/v1/Systems/web").header("Authorization", &basic());
    big.body = vec![b' '; MAX_BODY + 1];
    assert_eq!(call(&mut s, big).status, 413);
    let head = call(
        &mut s,
        Request::new(Method::Head, "/redfish/v1/Systems/web").header("Authorization", &basic()),
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for path in [
        "/",
        "/redfish/v2",
        "/redfish/v1//Systems",
        "/redfish/v1/Systems/web/../db",
        "/redfish/v1/Systems/web/Processors/CPU/extra",
        "/redfish/v1/Systemsweb",
    ] {
        assert_eq!(get(&mut s, path).status, 404, "{path}");
    }
    assert_eq!(
        get(&mut s, &format!("/redfish/v1/Systems/{}", "x".repeat(5000))).status,
        404
    );
    assert_eq!(get(&mut s, "/redfish/v1/Systems?$expand=*").status, 200);
}

/// Random paths, methods, headers and bodies: the service answers every one with a status,
/// and no slice changes state without valid credentials.
#[test]
fn random_requests_never_panic() {
    let mut s = service();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pieces = [
        "redfish",
        "v1",
        "Systems",
        "web",
        "db",
        "ctl",
        "Actions",
        "ComputerSystem.Reset",
        "VirtualMedia",
        "CD",
        "Storage",
        "NVMe",
        "Drives",
        "Share",
        "..",
        "%00",
        "",
        "NIC0",
        "NIC99999999999999999999",
        "SessionService",
        "Sessions",
        "1",
        "AccountService",
    ];
    let bodies = [
        "",
        "{",
        "null",
        "{\"ResetType\":\"ForceOff\"}",
        "{\"Boot\":{}}",
        "[]",
        "\u{0}",
        "{\"Image\":\"http://x/\"}",
        "{\"UserName\":\"admin\",\"Password\":\"x\"}",
    ];
    for _ in 0..20_000 {
        let mut path = String::new();
        for _ in 0..(next() % 8) {
            path.push('/');
            path.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let method = [
            Method::Get,
            Method::Post,
            Method::Patch,
            Method::Delete,
            Method::Other,
        ][(next() % 5) as usize];
        let mut request = Request::new(method, &path);
        if next() % 4 == 0 {
            request = request.header("Authorization", "Basic YWRtaW46");
        }
        request.body = bodies[(next() % bodies.len() as u64) as usize]
            .as_bytes()
            .to_vec();
        match s.handle(&request, next() % 10_000) {
            Outcome::Respond(r) => assert!((200..600).contains(&r.status)),
            Outcome::Fetch(job) => panic!("fetched without credentials: {job:?}"),
        }
    }
    for slice in ["web", "db", "probe"] {
        assert_eq!(fake(&mut s).state(slice), "on");
        assert_eq!(fake(&mut s).starts(slice), 1);
    }
}
