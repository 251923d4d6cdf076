//! The service: a request in, a response out, over a control-interface [`Client`]. It keeps
//! what the hypervisor does not: sessions, each system's boot override and virtual CD. Every
//! input is a client's and is checked; nothing a client sends can panic it or reach a slice
//! the request did not name. Long work is not done here: fetching a virtual media image is
//! handed back to the transport as a [`FetchJob`], and waits (a graceful restart's power-off,
//! a one-time boot's end) are [`Service::tick`]'s.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use microvisor_control::{
    BootSpec, Client, Error, ImageKind, InitrdChoice, SliceState, SliceStatus, Status, Transport,
    status::Role,
};

use crate::auth::{Auth, SESSION_TIMEOUT_S};
use crate::http::{Method, Request, Response};
use crate::resources::{
    Collection,
    accounts::{self, ACCOUNT, ROLE},
    node, root,
    systems::{
        self, BootEnabled, BootOverride, BootTarget, CD, CONTROLLER, DRIVE, MediaSlot, STORAGE,
        VOLUME,
    },
    uuid_from,
};

/// What the service is started with.
#[derive(Clone, Debug)]
pub struct Config {
    pub user: String,
    /// The password, or `sha256:<64 hex digits>` of it.
    pub password: String,
    /// How long a graceful shutdown may take before the hypervisor forces the slice off.
    pub shutdown_timeout: Duration,
    /// Most bytes of virtual media the service holds at once, over every system: images
    /// inserted and waiting to boot, and what fetches in flight may still bring (the manager's
    /// staging pool size, which no boot can exceed anyway).
    pub media_budget: u64,
}

/// Least media budget an insert needs left to start a fetch.
const MIN_MEDIA_BYTES: u64 = 1 << 20;

/// What a virtual CD boots: the kernel, initrd and command line its image names.
pub type BootImage = crate::iso::BootMedia;

/// A virtual media image to fetch: the transport fetches `url` and calls
/// [`Service::media_fetched`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchJob {
    pub system: String,
    pub url: String,
    /// Most bytes the fetch may bring (the ISO, and so what is read from it): what the
    /// media budget had left, reserved for it until it ends or the media is ejected.
    pub max_bytes: u64,
    /// Which insert of its system this is: a fetch that ends after an eject (or after a
    /// newer insert) is recognised and discarded.
    pub id: u64,
}

/// What [`Service::handle`] asks of the transport.
#[derive(Debug)]
pub enum Outcome {
    /// Send this.
    Respond(Response),
    /// Fetch an image, then [`Service::media_fetched`] gives the response.
    Fetch(FetchJob),
}

/// Work left for later on one system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// A graceful restart or a power cycle: start it once it is off (until the deadline).
    StartWhenOff { deadline_ms: u64 },
    /// A one-time boot from the CD or the network began: back to the slice's own boot source
    /// once the start with `starts` is under way (until the deadline).
    RestoreAfterStart { starts: u64, deadline_ms: u64 },
}

/// What the service keeps per system.
#[derive(Debug, Default)]
struct SystemState {
    boot: BootOverride,
    media: MediaSlot,
    image: Option<BootImage>,
    /// The insert being fetched (its [`FetchJob::id`]) and the budget it holds.
    fetching: Option<(u64, u64)>,
    /// [`FetchJob::id`]s handed out for this system.
    inserts: u64,
    /// Whether the slice's boot source is the CD this service staged.
    staged: bool,
    pending: Option<Pending>,
}

/// The Redfish service over one control-interface client.
#[derive(Debug)]
pub struct Service<T> {
    client: Client<T>,
    auth: Auth,
    config: Config,
    systems: BTreeMap<String, SystemState>,
    node_uuid: String,
    version: String,
    /// Bumped on each password change: the account's ETag.
    account_generation: u64,
}

/// A URI the service knows, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Versions,
    Root,
    Odata,
    Metadata,
    Systems,
    System(String),
    Reset(String),
    Processors(String),
    Processor(String),
    SimpleStorages(String),
    SimpleStorage(String),
    Storages(String),
    Storage(String),
    Drive(String),
    Controllers(String),
    Controller(String),
    SecureErase(String),
    Volumes(String),
    Volume(String),
    Nics(String),
    Nic(String, usize),
    Medias(String),
    Media(String),
    InsertMedia(String),
    EjectMedia(String),
    Managers,
    Manager,
    Chassis,
    ChassisNode,
    SessionService,
    Sessions,
    Session(String),
    AccountService,
    Accounts,
    Account,
    Roles,
    Role,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        if path.len() > 512 {
            return None;
        }
        let path = path.strip_suffix('/').unwrap_or(path);
        if path == "/redfish" {
            return Some(Route::Versions);
        }
        let rest = path.strip_prefix("/redfish/v1")?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.strip_prefix('/')?.split('/').collect()
        };
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        let s = |id: &str| id.to_string();
        Some(match parts.as_slice() {
            [] => Route::Root,
            ["odata"] => Route::Odata,
            ["$metadata"] => Route::Metadata,
            ["Systems"] => Route::Systems,
            ["Systems", id] => Route::System(s(id)),
            ["Systems", id, "Actions", "ComputerSystem.Reset"] => Route::Reset(s(id)),
            ["Systems", id, "Processors"] => Route::Processors(s(id)),
            ["Systems", id, "Processors", systems::PROCESSOR] => Route::Processor(s(id)),
            ["Systems", id, "SimpleStorage"] => Route::SimpleStorages(s(id)),
            ["Systems", id, "SimpleStorage", STORAGE] => Route::SimpleStorage(s(id)),
            ["Systems", id, "Storage"] => Route::Storages(s(id)),
            ["Systems", id, "Storage", STORAGE] => Route::Storage(s(id)),
            ["Systems", id, "Storage", STORAGE, "Drives", DRIVE] => Route::Drive(s(id)),
            ["Systems", id, "Storage", STORAGE, "Controllers"] => Route::Controllers(s(id)),
            ["Systems", id, "Storage", STORAGE, "Controllers", CONTROLLER] => {
                Route::Controller(s(id))
            }
            [
                "Systems",
                id,
                "Storage",
                STORAGE,
                "Drives",
                DRIVE,
                "Actions",
                "Drive.SecureErase",
            ] => Route::SecureErase(s(id)),
            ["Systems", id, "Storage", STORAGE, "Volumes"] => Route::Volumes(s(id)),
            ["Systems", id, "Storage", STORAGE, "Volumes", VOLUME] => Route::Volume(s(id)),
            ["Systems", id, "EthernetInterfaces"] => Route::Nics(s(id)),
            ["Systems", id, "EthernetInterfaces", nic] => {
                let index = nic.strip_prefix("NIC")?;
                if index.len() > 3 || (index.len() > 1 && index.starts_with('0')) {
                    return None;
                }
                Route::Nic(s(id), index.parse().ok()?)
            }
            ["Systems", id, "VirtualMedia"] => Route::Medias(s(id)),
            ["Systems", id, "VirtualMedia", CD] => Route::Media(s(id)),
            [
                "Systems",
                id,
                "VirtualMedia",
                CD,
                "Actions",
                "VirtualMedia.InsertMedia",
            ] => Route::InsertMedia(s(id)),
            [
                "Systems",
                id,
                "VirtualMedia",
                CD,
                "Actions",
                "VirtualMedia.EjectMedia",
            ] => Route::EjectMedia(s(id)),
            ["Managers"] => Route::Managers,
            ["Managers", node::NODE] => Route::Manager,
            ["Chassis"] => Route::Chassis,
            ["Chassis", node::NODE] => Route::ChassisNode,
            ["SessionService"] => Route::SessionService,
            ["SessionService", "Sessions"] => Route::Sessions,
            ["SessionService", "Sessions", id] => Route::Session(s(id)),
            ["AccountService"] => Route::AccountService,
            ["AccountService", "Accounts"] => Route::Accounts,
            ["AccountService", "Accounts", ACCOUNT] => Route::Account,
            ["AccountService", "Roles"] => Route::Roles,
            ["AccountService", "Roles", ROLE] => Route::Role,
            _ => return None,
        })
    }

    /// The methods this resource takes (GET implies HEAD).
    fn allowed(&self) -> &'static [Method] {
        use Method::*;
        match self {
            Route::System(_) | Route::Account => &[Get, Patch],
            Route::Reset(_)
            | Route::SecureErase(_)
            | Route::InsertMedia(_)
            | Route::EjectMedia(_) => &[Post],
            Route::Sessions => &[Get, Post],
            Route::Session(_) => &[Get, Delete],
            _ => &[Get],
        }
    }

    /// Whether it answers without credentials (Redfish Specification §13.2: the version
    /// document, the service root, the OData documents, and logging in).
    fn is_open(&self, method: Method) -> bool {
        match self {
            Route::Versions | Route::Root | Route::Odata | Route::Metadata => true,
            Route::Sessions => method == Method::Post,
            _ => false,
        }
    }

    /// The system the route is about.
    fn system(&self) -> Option<&str> {
        match self {
            Route::System(id)
            | Route::Reset(id)
            | Route::Processors(id)
            | Route::Processor(id)
            | Route::SimpleStorages(id)
            | Route::SimpleStorage(id)
            | Route::Storages(id)
            | Route::Storage(id)
            | Route::Drive(id)
            | Route::Controllers(id)
            | Route::Controller(id)
            | Route::SecureErase(id)
            | Route::Volumes(id)
            | Route::Volume(id)
            | Route::Nics(id)
            | Route::Nic(id, _)
            | Route::Medias(id)
            | Route::Media(id)
            | Route::InsertMedia(id)
            | Route::EjectMedia(id) => Some(id),
            _ => None,
        }
    }
}

/// Largest JSON body the service reads (the transport refuses larger ones first).
pub const MAX_BODY: usize = 64 * 1024;

impl<T: Transport> Service<T> {
    /// The service over `client`; reads the node once (its version, its slices for the
    /// node's UUID).
    pub fn new(mut client: Client<T>, config: Config) -> Result<Service<T>, Error> {
        let node = client.node()?;
        let slices = client.list()?;
        let mut identity = String::from("microvisor-node");
        for s in &slices {
            identity.push_str(&format!("/{}:{:?}", s.name, s.cores));
            for nic in &s.nics {
                identity.push_str(&format!(",{}", nic.mac.as_deref().unwrap_or(&nic.host)));
            }
        }
        Ok(Service {
            auth: match config.password.strip_prefix("sha256:") {
                Some(digest) => {
                    Auth::with_password_sha256(&config.user, digest).ok_or_else(|| {
                        Error::InvalidArgument("the password's sha256 is not 64 hex digits".into())
                    })?
                }
                None => Auth::new(&config.user, &config.password),
            },
            client,
            config,
            systems: BTreeMap::new(),
            node_uuid: uuid_from(&identity),
            version: node.version,
            account_generation: 1,
        })
    }

    pub fn client_mut(&mut self) -> &mut Client<T> {
        &mut self.client
    }

    /// Answers `request` at `now_ms` (a monotonic clock in ms).
    pub fn handle(&mut self, request: &Request, now_ms: u64) -> Outcome {
        let mut outcome = self.route(request, now_ms);
        if let Outcome::Respond(response) = &mut outcome {
            finish(response, request.method);
        }
        outcome
    }

    fn route(&mut self, request: &Request, now_ms: u64) -> Outcome {
        let Some(route) = Route::parse(&request.path) else {
            return respond(not_found(&request.path));
        };
        let method = match request.method {
            Method::Head => Method::Get,
            m => m,
        };
        if !route.is_open(method) {
            let caller = self.auth.caller(
                request.peer,
                request.get_header("authorization"),
                request.get_header("x-auth-token"),
                now_ms,
            );
            if caller.is_none() {
                return respond(unauthorized());
            }
        }
        let allowed = route.allowed();
        if !allowed.contains(&method) {
            return respond(
                Response::error(
                    405,
                    "OperationNotAllowed",
                    &format!("{} does not take this method", request.path),
                )
                .with_header("Allow", &allow_header(allowed)),
            );
        }
        let body = if matches!(method, Method::Post | Method::Patch) {
            match json_object(&request.body) {
                Ok(body) => body,
                Err(response) => return respond(response),
            }
        } else {
            Map::new()
        };
        // Everything about a system first checks that it is one (a tenant slice).
        let slice = match route.system() {
            Some(id) => match self.tenant(id) {
                Ok(slice) => Some(slice),
                Err(response) => return respond(response),
            },
            None => None,
        };
        let allow = allow_header(allowed);
        let response = match (route, method, slice) {
            (Route::Versions, ..) => Response::json(200, &serde_json::json!({"v1": root::ROOT})),
            (Route::Root, ..) => Response::json(200, &root::service_root(&self.node_uuid)),
            (Route::Odata, ..) => Response::json(200, &root::service_document()),
            (Route::Metadata, ..) => Response {
                status: 200,
                headers: vec![("Content-Type".into(), "application/xml".into())],
                body: root::metadata().into_bytes(),
            },
            (Route::Systems, ..) => match self.tenants() {
                Ok(names) => Response::json(
                    200,
                    &Collection::new(
                        "ComputerSystemCollection",
                        systems::SYSTEMS,
                        "Slices of the node",
                        &names,
                    ),
                ),
                Err(e) => control_error(&e),
            },
            (Route::System(_), Method::Get, Some(slice)) => self.system_response(&slice),
            (Route::System(_), _, Some(slice)) => self.patch_system(&slice, request, &body),
            (Route::Reset(_), _, Some(slice)) => self.reset(&slice, &body, now_ms),
            (Route::Processors(_), _, Some(slice)) => {
                Response::json(200, &systems::processors(&slice))
            }
            (Route::Processor(_), _, Some(slice)) => {
                Response::json(200, &systems::processor(&slice))
            }
            (Route::SimpleStorages(_), _, Some(slice)) => {
                Response::json(200, &systems::simple_storages(&slice))
            }
            (Route::Storages(_), _, Some(slice)) => Response::json(200, &systems::storages(&slice)),
            (
                route @ (Route::SimpleStorage(_)
                | Route::Storage(_)
                | Route::Drive(_)
                | Route::Controllers(_)
                | Route::Controller(_)
                | Route::Volumes(_)
                | Route::Volume(_)
                | Route::SecureErase(_)),
                _,
                Some(slice),
            ) => match slice.nvme.as_ref().map(|n| (n.bytes, n.queues)) {
                None => not_found(&request.path),
                Some((bytes, queues)) => match route {
                    Route::SimpleStorage(_) => {
                        Response::json(200, &systems::simple_storage(&slice, bytes))
                    }
                    Route::Storage(_) => Response::json(200, &systems::storage(&slice)),
                    Route::Drive(_) => Response::json(200, &systems::drive(&slice, bytes)),
                    Route::Controllers(_) => {
                        Response::json(200, &systems::storage_controllers(&slice))
                    }
                    Route::Controller(_) => {
                        Response::json(200, &systems::storage_controller(&slice, queues))
                    }
                    Route::Volumes(_) => Response::json(200, &systems::volumes(&slice)),
                    Route::Volume(_) => Response::json(200, &systems::volume(&slice, bytes)),
                    _ => self.secure_erase(&slice, &body),
                },
            },
            (Route::Nics(_), _, Some(slice)) => {
                Response::json(200, &systems::ethernet_interfaces(&slice))
            }
            (Route::Nic(_, index), _, Some(slice)) => {
                match systems::ethernet_interface(&slice, index) {
                    Some(nic) => Response::json(200, &nic),
                    None => not_found(&request.path),
                }
            }
            (Route::Medias(_), _, Some(slice)) => {
                Response::json(200, &systems::virtual_medias(&slice))
            }
            (Route::Media(_), _, Some(slice)) => {
                let state = self.systems.entry(slice.name.clone()).or_default();
                Response::json(200, &systems::virtual_media(&slice, &state.media))
            }
            (Route::InsertMedia(_), _, Some(slice)) => return self.insert_media(&slice, &body),
            (Route::EjectMedia(_), _, Some(slice)) => self.eject_media(&slice, &body),
            (Route::Managers, ..) => Response::json(
                200,
                &Collection::new(
                    "ManagerCollection",
                    node::MANAGERS,
                    "Managers",
                    &[node::NODE.to_string()],
                ),
            ),
            (Route::Manager, ..) => match self.tenants() {
                Ok(names) => {
                    Response::json(200, &node::manager(&self.version, &self.node_uuid, &names))
                }
                Err(e) => control_error(&e),
            },
            (Route::Chassis, ..) => Response::json(
                200,
                &Collection::new(
                    "ChassisCollection",
                    node::CHASSIS,
                    "Chassis",
                    &[node::NODE.to_string()],
                ),
            ),
            (Route::ChassisNode, ..) => match self.tenants() {
                Ok(names) => Response::json(200, &node::chassis(&names)),
                Err(e) => control_error(&e),
            },
            (Route::SessionService, ..) => {
                Response::json(200, &accounts::session_service(SESSION_TIMEOUT_S))
            }
            (Route::Sessions, Method::Get, _) => Response::json(
                200,
                &Collection::new(
                    "SessionCollection",
                    accounts::SESSIONS,
                    "Sessions",
                    &self.auth.session_ids(),
                ),
            ),
            (Route::Sessions, _, _) => self.login(request.peer, &body, now_ms),
            (Route::Session(id), Method::Get, _) => match self.auth.session(&id) {
                Some(s) => Response::json(200, &accounts::session(&s.id, &s.user)),
                None => not_found(&request.path),
            },
            (Route::Session(id), _, _) => {
                if self.auth.logout(&id) {
                    Response::empty(204)
                } else {
                    not_found(&request.path)
                }
            }
            (Route::AccountService, ..) => Response::json(200, &accounts::account_service()),
            (Route::Accounts, ..) => Response::json(
                200,
                &Collection::new(
                    "ManagerAccountCollection",
                    accounts::ACCOUNTS,
                    "Accounts",
                    &[ACCOUNT.to_string()],
                ),
            ),
            (Route::Account, Method::Get, _) => self.account_response(),
            (Route::Account, _, _) => self.patch_account(request, &body),
            (Route::Roles, ..) => Response::json(
                200,
                &Collection::new(
                    "RoleCollection",
                    accounts::ROLES,
                    "Roles",
                    &[ROLE.to_string()],
                ),
            ),
            (Route::Role, ..) => Response::json(200, &accounts::role()),
            // Every system route got its slice above.
            (_, _, None) => not_found(&request.path),
        };
        respond(response.with_header("Allow", &allow))
    }

    /// The names of the systems: every slice but the manager.
    fn tenants(&mut self) -> Result<Vec<String>, Error> {
        Ok(self
            .client
            .list()?
            .into_iter()
            .filter(|s| s.role != Role::Manager)
            .map(|s| s.name)
            .collect())
    }

    /// The status of system `id`, or the response that says it is none.
    fn tenant(&mut self, id: &str) -> Result<SliceStatus, Response> {
        let missing = || {
            Response::error(
                404,
                "ResourceMissingAtURI",
                &format!("the node has no system {id:?}"),
            )
        };
        if microvisor_control::protocol::check_slice_name(id).is_err() {
            return Err(missing());
        }
        match self.client.status(id) {
            Ok(s) if s.role == Role::Manager => Err(missing()),
            Ok(s) => Ok(s),
            Err(e) if e.status() == Some(Status::NoSuchSlice) => Err(missing()),
            Err(e) => Err(control_error(&e)),
        }
    }

    fn system_response(&mut self, slice: &SliceStatus) -> Response {
        let boot = self.systems.entry(slice.name.clone()).or_default().boot;
        let system = systems::system(
            slice,
            &boot,
            &self.node_uuid,
            &node::manager_id(),
            &node::chassis_id(),
        );
        let etag = system.etag.clone();
        Response::json(200, &system).with_header("ETag", &etag)
    }

    /// PATCH of a system: only its `Boot` override is writable.
    fn patch_system(
        &mut self,
        slice: &SliceStatus,
        request: &Request,
        body: &Map<String, Value>,
    ) -> Response {
        let state = self.systems.entry(slice.name.clone()).or_default();
        if let Err(response) = check_if_match(request, &systems::system_etag(&state.boot)) {
            return response;
        }
        let mut boot = state.boot;
        for (key, value) in body {
            if key.starts_with('@') {
                continue;
            }
            if key != "Boot" {
                return unknown_or_read_only(key, &format!("/{key}"));
            }
            let Some(fields) = value.as_object() else {
                return type_error("/Boot", "an object");
            };
            for (field, value) in fields {
                let pointer = format!("/Boot/{field}");
                let text = value.as_str();
                match field.as_str() {
                    "BootSourceOverrideTarget" => {
                        let allowable = BootTarget::allowable(slice);
                        match text.and_then(BootTarget::parse) {
                            Some(target) if allowable.contains(&target.name()) => {
                                boot.target = target
                            }
                            _ => return not_in_list(&pointer, value, allowable),
                        }
                    }
                    "BootSourceOverrideEnabled" => match text.and_then(BootEnabled::parse) {
                        Some(enabled) => boot.enabled = enabled,
                        None => return not_in_list(&pointer, value, BootEnabled::ALL),
                    },
                    "BootSourceOverrideMode" => {
                        if !text.is_some_and(|t| systems::BOOT_MODES.contains(&t)) {
                            return not_in_list(&pointer, value, systems::BOOT_MODES);
                        }
                    }
                    _ => return unknown_or_read_only(field, &pointer),
                }
            }
        }
        state.boot = boot;
        self.system_response(slice)
    }

    /// `ComputerSystem.Reset`.
    fn reset(&mut self, slice: &SliceStatus, body: &Map<String, Value>, now_ms: u64) -> Response {
        let reset_type = match action_parameter(body, "ResetType", systems::RESET_TYPES, &[]) {
            Ok(value) => value,
            Err(response) => return response,
        };
        let name = slice.name.as_str();
        // A later Reset replaces a start an earlier one left pending (a graceful restart or
        // a power cycle waiting for the slice to be off): a ForceOff while the slice shuts
        // down stays off. Until 2026-12-04 the pending start powered it on again (found in
        // review). PowerCycle and GracefulRestart below set their own.
        self.cancel_pending_start(name);
        let on = slice.state == SliceState::On;
        let off = matches!(slice.state, SliceState::Off);
        let result = match reset_type.as_str() {
            "On" if on => Ok(()),
            "On" | "ForceRestart" | "PowerCycle" if off => self.start(slice, now_ms),
            "ForceOff" if off => Ok(()),
            "ForceOff" => self.client.off(name),
            "ForceRestart" => self
                .prepare_boot(slice)
                .and_then(|()| self.client.restart(name))
                .and_then(|()| self.after_start(slice, now_ms)),
            // OFF returns while the slice stops: it starts once it is off (tick).
            "PowerCycle" if on => self
                .client
                .off(name)
                .map(|()| self.start_when_off(name, now_ms + 30_000)),
            "GracefulShutdown" if off => Ok(()),
            "GracefulShutdown" => self.client.shutdown(name, self.config.shutdown_timeout),
            "GracefulRestart" if off => self.start(slice, now_ms),
            "GracefulRestart" => {
                let wait =
                    u64::try_from(self.config.shutdown_timeout.as_millis()).unwrap_or(u64::MAX / 2);
                self.client
                    .shutdown(name, self.config.shutdown_timeout)
                    .map(|()| self.start_when_off(name, now_ms + wait + 30_000))
            }
            // On, PowerCycle while shutting down or stopping.
            _ => {
                return Response::error(
                    409,
                    "ResourceInUse",
                    &format!(
                        "system {name} is {}: wait until it is on or off",
                        slice.state
                    ),
                );
            }
        };
        match result {
            Ok(()) => Response::empty(204),
            Err(e) => control_error(&e),
        }
    }

    /// Drops a start left pending for `name` by an earlier Reset.
    fn cancel_pending_start(&mut self, name: &str) {
        if let Some(state) = self.systems.get_mut(name)
            && matches!(state.pending, Some(Pending::StartWhenOff { .. }))
        {
            state.pending = None;
        }
    }

    /// Starts `name` once it is off (OFF and SHUTDOWN return while it stops), from
    /// [`Service::tick`], until `deadline_ms`.
    fn start_when_off(&mut self, name: &str, deadline_ms: u64) {
        self.systems.entry(name.to_string()).or_default().pending =
            Some(Pending::StartWhenOff { deadline_ms });
    }

    /// Starts an off slice from what its boot override says.
    fn start(&mut self, slice: &SliceStatus, now_ms: u64) -> Result<(), Error> {
        self.prepare_boot(slice)?;
        self.client.on(&slice.name)?;
        self.after_start(slice, now_ms)
    }

    /// Sets the boot source the override asks for, before a start.
    fn prepare_boot(&mut self, slice: &SliceStatus) -> Result<(), Error> {
        let name = slice.name.as_str();
        let state = self.systems.entry(name.to_string()).or_default();
        if state.boot.enabled == BootEnabled::Disabled {
            return Ok(());
        }
        match state.boot.target {
            BootTarget::None => Ok(()),
            BootTarget::Hdd => {
                let flashed = slice.boot.as_ref().is_none_or(|b| b.source == "flashed");
                if !flashed || state.staged {
                    self.client.boot_default(name)?;
                }
                self.systems.entry(name.to_string()).or_default().staged = false;
                Ok(())
            }
            BootTarget::Pxe => {
                self.client.boot_network(name)?;
                self.systems.entry(name.to_string()).or_default().staged = false;
                Ok(())
            }
            BootTarget::Cd => {
                let Some(image) = state.image.clone() else {
                    return Err(Error::InvalidArgument(format!(
                        "system {name} is to boot its virtual CD, which is empty: insert media first"
                    )));
                };
                self.client.stage(name, ImageKind::Kernel, &image.kernel)?;
                let initrd = match &image.initrd {
                    Some(initrd) => {
                        self.client.stage(name, ImageKind::Initrd, initrd)?;
                        InitrdChoice::Staged
                    }
                    None => InitrdChoice::None,
                };
                self.client.boot(
                    name,
                    &BootSpec {
                        staged_kernel: true,
                        initrd,
                        cmdline: Some(image.cmdline.clone()),
                    },
                )?;
                self.systems.entry(name.to_string()).or_default().staged = true;
                Ok(())
            }
        }
    }

    /// After a start: a one-time override is used up.
    fn after_start(&mut self, slice: &SliceStatus, now_ms: u64) -> Result<(), Error> {
        let state = self.systems.entry(slice.name.clone()).or_default();
        if state.boot.enabled == BootEnabled::Once {
            if matches!(state.boot.target, BootTarget::Cd | BootTarget::Pxe) {
                state.pending = Some(Pending::RestoreAfterStart {
                    starts: slice.starts,
                    deadline_ms: now_ms + 120_000,
                });
            }
            state.boot = BootOverride::default();
        }
        Ok(())
    }

    /// The waits: starts a gracefully restarted slice once it is off, and puts a slice that
    /// booted its CD once back on its own boot source once that start is under way. Call it
    /// every few hundred ms.
    pub fn tick(&mut self, now_ms: u64) {
        let pending: Vec<(String, Pending)> = self
            .systems
            .iter()
            .filter_map(|(name, s)| s.pending.map(|p| (name.clone(), p)))
            .collect();
        for (name, pending) in pending {
            let Ok(slice) = self.client.status(&name) else {
                continue;
            };
            let done = match pending {
                Pending::StartWhenOff { deadline_ms } => {
                    if slice.state == SliceState::Off {
                        if let Err(e) = self.start(&slice, now_ms) {
                            eprintln!("redfish: graceful restart of {name}: {e}");
                        }
                        true
                    } else {
                        now_ms > deadline_ms
                    }
                }
                Pending::RestoreAfterStart {
                    starts,
                    deadline_ms,
                } => {
                    let started = slice.starts > starts && slice.state == SliceState::On;
                    if started {
                        // BUSY while the hypervisor still loads the images: try next tick.
                        match self.client.boot_default(&name) {
                            Ok(()) => {
                                self.systems.entry(name.clone()).or_default().staged = false;
                                true
                            }
                            Err(e) if e.status() == Some(Status::Busy) => now_ms > deadline_ms,
                            Err(e) => {
                                eprintln!("redfish: {name} back to its own boot source: {e}");
                                true
                            }
                        }
                    } else {
                        now_ms > deadline_ms
                    }
                }
            };
            if done {
                let state = self.systems.entry(name).or_default();
                if state.pending == Some(pending) {
                    state.pending = None;
                }
            }
        }
    }

    fn secure_erase(&mut self, slice: &SliceStatus, body: &Map<String, Value>) -> Response {
        if let Some(key) = body.keys().find(|k| !k.starts_with('@')) {
            return Response::error_with(
                400,
                "ActionParameterUnknown",
                &format!("Drive.SecureErase takes no parameter {key:?}"),
                &[format!("/{key}")],
            );
        }
        match self.client.erase(&slice.name) {
            Ok(()) => {
                // An erased slice stays off: no start left pending from before.
                self.cancel_pending_start(&slice.name);
                Response::empty(204)
            }
            Err(e) => control_error(&e),
        }
    }

    fn insert_media(&mut self, slice: &SliceStatus, body: &Map<String, Value>) -> Outcome {
        let image = match action_parameter(
            body,
            "Image",
            &[],
            &[
                "Inserted",
                "WriteProtected",
                "TransferMethod",
                "TransferProtocolType",
            ],
        ) {
            Ok(image) => image,
            Err(response) => return respond(response),
        };
        for (key, wanted) in [("Inserted", true), ("WriteProtected", true)] {
            if let Some(value) = body.get(key)
                && value.as_bool() != Some(wanted)
            {
                return respond(Response::error_with(
                    400,
                    "ActionParameterValueNotInList",
                    &format!("{key} can only be {wanted}"),
                    &[format!("/{key}")],
                ));
            }
        }
        for (key, allowed) in [
            ("TransferMethod", &["Upload"][..]),
            ("TransferProtocolType", &["HTTP", "HTTPS"][..]),
        ] {
            if let Some(value) = body.get(key)
                && !value.as_str().is_some_and(|v| allowed.contains(&v))
            {
                return respond(not_in_list(&format!("/{key}"), value, allowed));
            }
        }
        let scheme_ok = image.len() <= 2048
            && (image.starts_with("http://") || image.starts_with("https://"))
            && !image.chars().any(|c| c.is_control() || c == ' ');
        if !scheme_ok {
            return respond(Response::error_with(
                400,
                "ActionParameterValueFormatError",
                "Image must be an http:// or https:// URL",
                &["/Image".into()],
            ));
        }
        let left = self.config.media_budget.saturating_sub(self.media_held());
        let state = self.systems.entry(slice.name.clone()).or_default();
        if state.media.image.is_some() {
            return respond(Response::error(
                409,
                "ResourceInUse",
                &format!(
                    "system {}'s virtual CD holds {}: eject it first",
                    slice.name,
                    state.media.image.as_deref().unwrap_or_default()
                ),
            ));
        }
        if left < MIN_MEDIA_BYTES {
            return respond(Response::error(
                409,
                "ResourceInUse",
                &format!(
                    "virtual media of the systems holds {} MiB of the service's {} MiB: eject some first",
                    (self.config.media_budget - left) >> 20,
                    self.config.media_budget >> 20
                ),
            ));
        }
        state.media = MediaSlot {
            image: Some(image.clone()),
            inserted: false,
        };
        state.inserts += 1;
        state.fetching = Some((state.inserts, left));
        Outcome::Fetch(FetchJob {
            system: slice.name.clone(),
            url: image,
            max_bytes: left,
            id: state.inserts,
        })
    }

    /// Sets [`Config::media_budget`] (once the node's staging pool size is known).
    pub fn set_media_budget(&mut self, bytes: u64) {
        self.config.media_budget = bytes;
    }

    /// Bytes of virtual media held now: images inserted and not yet ejected, and the budget
    /// each fetch in flight holds.
    fn media_held(&self) -> u64 {
        self.systems
            .values()
            .map(|state| {
                let image = state.image.as_ref().map_or(0, |i| {
                    i.kernel.len() + i.initrd.as_ref().map_or(0, Vec::len)
                });
                image as u64 + state.fetching.map_or(0, |(_, bytes)| bytes)
            })
            .sum()
    }

    /// The end of an `InsertMedia`: `result` is what the image boots, or why it cannot be
    /// used.
    pub fn media_fetched(&mut self, job: &FetchJob, result: Result<BootImage, String>) -> Response {
        let state = self.systems.entry(job.system.clone()).or_default();
        let mut response = if state.fetching.map(|(id, _)| id) != Some(job.id) {
            // Ejected while it was being fetched.
            Response::error(
                409,
                "ResourceInUse",
                &format!("the media {} was ejected while it was fetched", job.url),
            )
        } else {
            state.fetching = None;
            match result {
                Ok(image) => {
                    eprintln!(
                        "redfish: {}: virtual CD {} ({}, kernel {} bytes{})",
                        job.system,
                        job.url,
                        image.source,
                        image.kernel.len(),
                        image
                            .initrd
                            .as_ref()
                            .map(|i| format!(", initrd {} bytes", i.len()))
                            .unwrap_or_default()
                    );
                    state.media.inserted = true;
                    state.image = Some(image);
                    Response::empty(204)
                }
                Err(why) => {
                    state.media = MediaSlot::default();
                    state.image = None;
                    Response::error_with(
                        400,
                        "ActionParameterValueError",
                        &format!("cannot use {}: {why}", job.url),
                        &["/Image".into()],
                    )
                }
            }
        };
        finish(&mut response, Method::Post);
        response
    }

    fn eject_media(&mut self, slice: &SliceStatus, body: &Map<String, Value>) -> Response {
        if let Some(key) = body.keys().find(|k| !k.starts_with('@')) {
            return Response::error_with(
                400,
                "ActionParameterUnknown",
                &format!("VirtualMedia.EjectMedia takes no parameter {key:?}"),
                &[format!("/{key}")],
            );
        }
        let state = self.systems.entry(slice.name.clone()).or_default();
        state.media = MediaSlot::default();
        state.image = None;
        // A fetch still in flight is discarded when it ends; its budget is free now.
        state.fetching = None;
        // A CD the slice boots from is gone: its next start boots its own source again.
        if state.staged {
            if let Err(e) = self.client.boot_default(&slice.name) {
                return control_error(&e);
            }
            self.systems.entry(slice.name.clone()).or_default().staged = false;
        }
        Response::empty(204)
    }

    fn login(
        &mut self,
        peer: Option<std::net::IpAddr>,
        body: &Map<String, Value>,
        now_ms: u64,
    ) -> Response {
        let field = |name: &str| body.get(name).and_then(Value::as_str);
        let (Some(user), Some(password)) = (field("UserName"), field("Password")) else {
            return Response::error_with(
                400,
                "PropertyMissing",
                "a session needs UserName and Password (strings)",
                &["/UserName".into(), "/Password".into()],
            );
        };
        match self.auth.login(peer, user, password, now_ms) {
            Some(session) => {
                let location = format!("{}/{}", accounts::SESSIONS, session.id);
                Response::json(201, &accounts::session(&session.id, &session.user))
                    .with_header("X-Auth-Token", &session.token)
                    .with_header("Location", &location)
            }
            None => unauthorized(),
        }
    }

    fn account_etag(&self) -> String {
        format!("W/\"{}\"", self.account_generation)
    }

    fn account_response(&self) -> Response {
        let etag = self.account_etag();
        Response::json(200, &accounts::account(self.auth.user(), &etag)).with_header("ETag", &etag)
    }

    /// PATCH of the account: only its `Password`.
    fn patch_account(&mut self, request: &Request, body: &Map<String, Value>) -> Response {
        if let Err(response) = check_if_match(request, &self.account_etag()) {
            return response;
        }
        let mut password = None;
        for (key, value) in body {
            match key.as_str() {
                k if k.starts_with('@') => {}
                "Password" => match value.as_str() {
                    Some(p) => password = Some(p),
                    None => return type_error("/Password", "a string"),
                },
                _ => return unknown_or_read_only(key, &format!("/{key}")),
            }
        }
        if let Some(password) = password {
            if let Err(why) = self.auth.set_password(password) {
                return Response::error_with(
                    400,
                    "PropertyValueFormatError",
                    &why,
                    &["/Password".into()],
                );
            }
            self.account_generation += 1;
        }
        self.account_response()
    }
}

fn respond(response: Response) -> Outcome {
    Outcome::Respond(response)
}

/// Headers every response has; a HEAD answer loses its body.
fn finish(response: &mut Response, method: Method) {
    response
        .headers
        .push(("OData-Version".into(), "4.0".into()));
    response
        .headers
        .push(("Cache-Control".into(), "no-cache".into()));
    if method == Method::Head {
        response.body.clear();
    }
}

fn allow_header(methods: &[Method]) -> String {
    let mut names = Vec::new();
    for m in methods {
        match m {
            Method::Get => names.extend(["GET", "HEAD"]),
            Method::Post => names.push("POST"),
            Method::Patch => names.push("PATCH"),
            Method::Delete => names.push("DELETE"),
            Method::Put => names.push("PUT"),
            Method::Head | Method::Other => {}
        }
    }
    names.join(", ")
}

fn not_found(path: &str) -> Response {
    Response::error(
        404,
        "ResourceMissingAtURI",
        &format!(
            "no resource at {}",
            path.chars().take(200).collect::<String>()
        ),
    )
}

/// 401 with nothing about what was wrong.
fn unauthorized() -> Response {
    Response::error(401, "NoValidSession", "authentication is required")
        .with_header("WWW-Authenticate", "Basic realm=\"microvisor\"")
}

/// The body as a JSON object, or the 400 that says why not.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Response> {
    if body.len() > MAX_BODY {
        return Err(Response::error(
            413,
            "GeneralError",
            &format!("a body of {} bytes (at most {MAX_BODY})", body.len()),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Response::error(
            400,
            "MalformedJSON",
            "the body must be a JSON object",
        )),
        Err(e) => Err(Response::error(
            400,
            "MalformedJSON",
            &format!("the body is not JSON: {e}"),
        )),
    }
}

/// The string parameter `name` of an action (one of `allowed` unless empty); parameters
/// other than `name` and `others` are refused.
fn action_parameter(
    body: &Map<String, Value>,
    name: &str,
    allowed: &[&str],
    others: &[&str],
) -> Result<String, Response> {
    if let Some(key) = body
        .keys()
        .find(|k| !k.starts_with('@') && *k != name && !others.contains(&k.as_str()))
    {
        return Err(Response::error_with(
            400,
            "ActionParameterUnknown",
            &format!("the action takes no parameter {key:?}"),
            &[format!("/{key}")],
        ));
    }
    let Some(value) = body.get(name) else {
        return Err(Response::error_with(
            400,
            "ActionParameterMissing",
            &format!("the action needs {name}"),
            &[format!("/{name}")],
        ));
    };
    match value.as_str() {
        Some(v) if allowed.is_empty() || allowed.contains(&v) => Ok(v.to_string()),
        _ if allowed.is_empty() => Err(type_error(&format!("/{name}"), "a string")),
        _ => Err(Response::error_with(
            400,
            "ActionParameterValueNotInList",
            &format!(
                "{name} {} is not one of {}",
                short(value),
                allowed.join(", ")
            ),
            &[format!("/{name}")],
        )),
    }
}

/// `If-Match`: absent, `*`, or one of its tags the current one; else 412.
fn check_if_match(request: &Request, current: &str) -> Result<(), Response> {
    let Some(wanted) = request.get_header("if-match") else {
        return Ok(());
    };
    let matches = wanted.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag == current || tag.strip_prefix("W/") == current.strip_prefix("W/")
    });
    if matches {
        Ok(())
    } else {
        Err(Response::error(
            412,
            "PreconditionFailed",
            &format!(
                "the resource's ETag is {current}, not {}",
                short_str(wanted)
            ),
        ))
    }
}

fn unknown_or_read_only(key: &str, pointer: &str) -> Response {
    Response::error_with(
        400,
        "PropertyUnknown",
        &format!(
            "{} is not a writable property of this resource",
            short_str(key)
        ),
        &[pointer.to_string()],
    )
}

fn not_in_list(pointer: &str, value: &Value, allowed: &[&str]) -> Response {
    Response::error_with(
        400,
        "PropertyValueNotInList",
        &format!(
            "{pointer} {} is not one of {}",
            short(value),
            allowed.join(", ")
        ),
        &[pointer.to_string()],
    )
}

fn type_error(pointer: &str, wanted: &str) -> Response {
    Response::error_with(
        400,
        "PropertyValueTypeError",
        &format!("{pointer} must be {wanted}"),
        &[pointer.to_string()],
    )
}

/// A value for a message, cut short.
fn short(value: &Value) -> String {
    short_str(&value.to_string())
}

fn short_str(text: &str) -> String {
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    out
}

/// A control-interface error as the response a client can act on.
fn control_error(error: &Error) -> Response {
    let (status, id) = match error.status() {
        Some(Status::NoSuchSlice) => (404, "ResourceMissingAtURI"),
        Some(Status::Busy | Status::WrongState) => (409, "ResourceInUse"),
        Some(Status::TooLarge | Status::NoSpace | Status::BadImage) => {
            (400, "ActionParameterValueError")
        }
        Some(Status::NotPermitted) => (403, "InsufficientPrivilege"),
        _ => match error {
            Error::InvalidArgument(_) => (409, "ResourceInUse"),
            _ => (500, "InternalError"),
        },
    };
    Response::error(status, id, &error.to_string())
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
