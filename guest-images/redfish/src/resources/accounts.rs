//! Sessions and accounts: `SessionService` with its `Sessions`, `AccountService` with the
//! one administrator account and its role.

use serde::Serialize;

use super::{Link, Status, link, odata_type};

pub const SESSION_SERVICE: &str = "/redfish/v1/SessionService";
pub const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";
pub const ACCOUNT_SERVICE: &str = "/redfish/v1/AccountService";
pub const ACCOUNTS: &str = "/redfish/v1/AccountService/Accounts";
pub const ROLES: &str = "/redfish/v1/AccountService/Roles";
/// Id of the one account and of its role.
pub const ACCOUNT: &str = "1";
pub const ROLE: &str = "Administrator";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionService {
    #[serde(rename = "@odata.id")]
    pub odata_id: &'static str,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub service_enabled: bool,
    pub session_timeout: u64,
    pub sessions: Link,
    pub status: Status,
}

pub fn session_service(timeout_s: u64) -> SessionService {
    SessionService {
        odata_id: SESSION_SERVICE,
        odata_type: odata_type("SessionService"),
        id: "SessionService",
        name: "Session service",
        service_enabled: true,
        session_timeout: timeout_s,
        sessions: link(SESSIONS),
        status: Status::ENABLED,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Session {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: String,
    pub name: &'static str,
    pub user_name: String,
    /// Always null when read (Session schema: the password is write-only).
    pub password: Option<String>,
}

pub fn session(id: &str, user: &str) -> Session {
    Session {
        odata_id: format!("{SESSIONS}/{id}"),
        odata_type: odata_type("Session"),
        id: id.to_string(),
        name: "User session",
        user_name: user.to_string(),
        password: None,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountService {
    #[serde(rename = "@odata.id")]
    pub odata_id: &'static str,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub service_enabled: bool,
    pub min_password_length: usize,
    pub max_password_length: usize,
    pub accounts: Link,
    pub roles: Link,
    pub status: Status,
}

pub fn account_service() -> AccountService {
    AccountService {
        odata_id: ACCOUNT_SERVICE,
        odata_type: odata_type("AccountService"),
        id: "AccountService",
        name: "Account service",
        service_enabled: true,
        min_password_length: crate::auth::MIN_PASSWORD,
        max_password_length: crate::auth::MAX_PASSWORD,
        accounts: link(ACCOUNTS),
        roles: link(ROLES),
        status: Status::ENABLED,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagerAccount {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    #[serde(rename = "@odata.etag")]
    pub etag: String,
    pub id: &'static str,
    pub name: &'static str,
    pub user_name: String,
    /// Always null when read.
    pub password: Option<String>,
    pub role_id: &'static str,
    pub enabled: bool,
    pub locked: bool,
    pub account_types: &'static [&'static str],
    pub links: AccountLinks,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountLinks {
    pub role: Link,
}

/// The account; `etag` changes with its password.
pub fn account(user: &str, etag: &str) -> ManagerAccount {
    ManagerAccount {
        odata_id: format!("{ACCOUNTS}/{ACCOUNT}"),
        odata_type: odata_type("ManagerAccount"),
        etag: etag.to_string(),
        id: ACCOUNT,
        name: "Administrator account",
        user_name: user.to_string(),
        password: None,
        role_id: ROLE,
        enabled: true,
        locked: false,
        account_types: &["Redfish"],
        links: AccountLinks {
            role: link(format!("{ROLES}/{ROLE}")),
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Role {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
    #[serde(rename = "@odata.type")]
    pub odata_type: String,
    pub id: &'static str,
    pub name: &'static str,
    pub role_id: &'static str,
    pub is_predefined: bool,
    pub assigned_privileges: &'static [&'static str],
}

pub fn role() -> Role {
    Role {
        odata_id: format!("{ROLES}/{ROLE}"),
        odata_type: odata_type("Role"),
        id: ROLE,
        name: "Administrator",
        role_id: ROLE,
        is_predefined: true,
        assigned_privileges: &[
            "Login",
            "ConfigureManager",
            "ConfigureUsers",
            "ConfigureSelf",
            "ConfigureComponents",
        ],
    }
}
