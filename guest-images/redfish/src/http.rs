//! The service's view of HTTP: a request as the transport read it and the response the
//! service gives, plus the Redfish error body (Redfish Specification DSP0266 §9.6 "Error
//! responses", messages of the `Base` registry). The transport (`server`) fills and sends
//! them; everything above it is plain data, tested on the host.

use serde::Serialize;

/// Version of the `Base` message registry our message ids come from.
pub const BASE_REGISTRY: &str = "Base.1.8";

/// An HTTP method the service knows (others are answered 405).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Put,
    Delete,
    /// Any other method.
    Other,
}

impl Method {
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PATCH" => Method::Patch,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// One request, body already read (and bounded) by the transport.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// The path, percent-decoding not applied (Redfish ids here are plain ASCII).
    pub path: String,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Where it came from (the connection's peer), when known.
    pub peer: Option<std::net::IpAddr>,
}

impl Request {
    pub fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            peer: None,
        }
    }

    /// The same request from `peer`.
    pub fn from(mut self, peer: std::net::IpAddr) -> Request {
        self.peer = Some(peer);
        self
    }

    /// The same request with a header (name lower-cased).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The same request with a JSON body.
    pub fn json(mut self, body: &serde_json::Value) -> Request {
        self.body = body.to_string().into_bytes();
        self.header("content-type", "application/json")
    }

    /// The first value of header `name` (lower-case).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with `value` as its JSON body.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        let body = match serde_json::to_vec(value) {
            Ok(body) => body,
            // Our own types always serialize; if one did not, say so rather than panic.
            Err(e) => return Response::error(500, "InternalError", &format!("{e}")),
        };
        Response {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body,
        }
    }

    /// A response without a body.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A Redfish error: `message_id` of the Base registry, `message` the one line a person
    /// reads.
    pub fn error(status: u16, message_id: &str, message: &str) -> Response {
        Response::error_with(status, message_id, message, &[])
    }

    /// A Redfish error whose message is about `properties` (JSON pointers of the request).
    pub fn error_with(
        status: u16,
        message_id: &str,
        message: &str,
        properties: &[String],
    ) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: format!("{BASE_REGISTRY}.GeneralError"),
                message: message.to_string(),
                extended_info: vec![ExtendedInfo {
                    odata_type: "#Message.v1_1_1.Message",
                    message_id: format!("{BASE_REGISTRY}.{message_id}"),
                    message: message.to_string(),
                    related_properties: properties.to_vec(),
                    severity: "Critical",
                    message_severity: "Critical",
                    resolution: resolution(message_id),
                }],
            },
        };
        Response::json(status, &body)
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The first value of header `name` (any case).
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (tests).
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the client can do about a message.
fn resolution(message_id: &str) -> &'static str {
    match message_id {
        "NoValidSession" | "ResourceAtUriUnauthorized" => {
            "Log in with a session (POST the SessionService's Sessions) or Basic credentials."
        }
        "MalformedJSON" => "Send a well-formed JSON object.",
        "PropertyUnknown" | "PropertyNotWritable" => "Remove the property from the request.",
        "PropertyValueNotInList" | "PropertyValueTypeError" | "ActionParameterValueNotInList" => {
            "Use one of the values the resource lists as allowable."
        }
        "PreconditionFailed" => "Read the resource again and retry with its current ETag.",
        "ResourceMissingAtURI" => "Use a URI the service lists.",
        _ => "None.",
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Serialize)]
struct ErrorObject {
    code: String,
    message: String,
    #[serde(rename = "@Message.ExtendedInfo")]
    extended_info: Vec<ExtendedInfo>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExtendedInfo {
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    message_id: String,
    message: String,
    related_properties: Vec<String>,
    severity: &'static str,
    message_severity: &'static str,
    resolution: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_has_the_redfish_shape() {
        let r = Response::error_with(
            400,
            "PropertyUnknown",
            "Boot/Foo is not a property",
            &["/Boot/Foo".into()],
        );
        assert_eq!(r.status, 400);
        let body = r.body_json();
        assert_eq!(body["error"]["code"], "Base.1.8.GeneralError");
        let info = &body["error"]["@Message.ExtendedInfo"][0];
        assert_eq!(info["MessageId"], "Base.1.8.PropertyUnknown");
        assert_eq!(info["RelatedProperties"][0], "/Boot/Foo");
        assert_eq!(
            r.get_header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }

    #[test]
    fn methods_parse() {
        assert_eq!(Method::parse("PATCH"), Method::Patch);
        assert_eq!(Method::parse("patch"), Method::Other);
        assert_eq!(Method::parse("TRACE"), Method::Other);
    }
}
