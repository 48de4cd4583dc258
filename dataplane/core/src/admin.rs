//! The gateway's admin API, as a contract: the requests ([`Request`]),
//! their HTTP form, and the answers ([`Response`]). The gateway's server
//! parses requests with [`Request::from_http`]; the CLI (`sluice policy
//! ...`, `sluice flows`) builds them and sends them (`sluice_gateway::admin::call`),
//! reading the answer with [`parse_response`]: both sides use these types,
//! so the two cannot drift apart. Pure: no socket here.
//!
//! | request | HTTP |
//! |---|---|
//! | [`Request::Status`] | `GET /policy` |
//! | [`Request::Reload`] | `POST /policy/reload` |
//! | [`Request::Tenant`] | `POST /policy/tenant?name=NAME` |
//! | [`Request::Explain`] | `GET /policy/explain?src=..&dst=..[&sport=..][&dport=..][&proto=..][&process=..][&domain=..][&local=1]` |
//! | [`Request::Flows`] | `GET /flows` |
//! | [`Request::Domains`] | `GET /bypass/dns` |
//! | [`Request::Edges`] | `GET /edges` |
//!
//! Answers are `text/plain`: 200 with the text the CLI prints, 400 for a
//! malformed request, 401/403/421 for refused callers, 404/405 for other
//! paths and methods, 409 for a change the gateway refused (with why).
use std::{fmt::Write as _, net::IpAddr};

/// A flow to explain against the running policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// The executable behind the flow.
    pub process: Option<String>,
    /// The name the destination was resolved from.
    pub domain: Option<String>,
    /// A flow of the gateway host itself.
    pub local: bool,
}

/// An admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The running policy's state.
    Status,
    /// Read the configuration file again and swap its policy in.
    Reload,
    /// Switch a private-access tenant on (the others off).
    Tenant {
        /// Its name.
        name: String,
    },
    /// Why a flow gets its verdict, live.
    Explain(Explain),
    /// This host's connections (endpoint mode).
    Flows,
    /// The addresses the domain bypass holds.
    Domains,
    /// Each worker's edges per tenant: state, RTT, and why the active
    /// one was chosen.
    Edges,
}

/// Why an HTTP request is not an admin request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such path.
    #[error("not found")]
    NotFound,
    /// A known path with another method.
    #[error("method not allowed")]
    Method,
    /// The query is wrong.
    #[error("{0}")]
    Bad(String),
}

impl RouteError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RouteError::NotFound => 404,
            RouteError::Method => 405,
            RouteError::Bad(_) => 400,
        }
    }
}

/// Values sent in a query: names, addresses, paths; no separators, spaces
/// or control characters (nothing is percent-encoded on this API).
fn plain(key: &str, v: &str) -> Result<(), RouteError> {
    if v.is_empty()
        || v.len() > 1024
        || !v
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"&=%?#+".contains(&b))
    {
        return Err(RouteError::Bad(format!(
            "{key}: 1 to 1024 printable characters without spaces, &, =, %, ?, # or +"
        )));
    }
    Ok(())
}

impl Request {
    /// Its HTTP method.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Reload | Request::Tenant { .. } => "POST",
            _ => "GET",
        }
    }

    /// Its HTTP target (path and query).
    ///
    /// # Errors
    /// If a value cannot travel in a query ([`RouteError::Bad`]).
    pub fn target(&self) -> Result<String, RouteError> {
        Ok(match self {
            Request::Status => "/policy".into(),
            Request::Reload => "/policy/reload".into(),
            Request::Tenant { name } => {
                plain("name", name)?;
                format!("/policy/tenant?name={name}")
            }
            Request::Explain(e) => format!("/policy/explain?{}", e.query()?),
            Request::Flows => "/flows".into(),
            Request::Domains => "/bypass/dns".into(),
            Request::Edges => "/edges".into(),
        })
    }

    /// The request an HTTP method, path and query make.
    ///
    /// # Errors
    /// Unknown paths, wrong methods, bad queries.
    pub fn from_http(method: &str, path: &str, query: &str) -> Result<Self, RouteError> {
        let want = |m: &str, r: Request| {
            if method == m {
                Ok(r)
            } else {
                Err(RouteError::Method)
            }
        };
        match path {
            "/policy" => want("GET", Request::Status),
            "/policy/reload" => want("POST", Request::Reload),
            "/policy/tenant" => {
                if method != "POST" {
                    return Err(RouteError::Method);
                }
                let name = query
                    .strip_prefix("name=")
                    .ok_or_else(|| RouteError::Bad("expected ?name=TENANT".into()))?;
                plain("name", name)?;
                Ok(Request::Tenant {
                    name: name.to_string(),
                })
            }
            "/policy/explain" => {
                if method != "GET" {
                    return Err(RouteError::Method);
                }
                Explain::from_query(query).map(Request::Explain)
            }
            "/flows" => want("GET", Request::Flows),
            "/bypass/dns" => want("GET", Request::Domains),
            "/edges" => want("GET", Request::Edges),
            _ => Err(RouteError::NotFound),
        }
    }
}

impl Explain {
    /// `src=..&dst=..&sport=..&dport=..&proto=..[&process=..][&domain=..][&local=1]`.
    ///
    /// # Errors
    /// A process or domain that cannot travel in a query.
    pub fn query(&self) -> Result<String, RouteError> {
        let mut q = format!(
            "src={}&dst={}&sport={}&dport={}&proto={}",
            self.src, self.dst, self.sport, self.dport, self.proto
        );
        if let Some(p) = &self.process {
            plain("process", p)?;
            let _ = write!(q, "&process={p}");
        }
        if let Some(d) = &self.domain {
            plain("domain", d)?;
            let _ = write!(q, "&domain={d}");
        }
        if self.local {
            q.push_str("&local=1");
        }
        Ok(q)
    }

    /// Parses [`Explain::query`]'s form (`sport`, `dport`, `proto` default
    /// to 0, 0 and TCP).
    ///
    /// # Errors
    /// Unknown keys, bad values, no `src` or `dst`.
    pub(crate) fn from_query(query: &str) -> Result<Self, RouteError> {
        let bad = |m: String| RouteError::Bad(m);
        let (mut src, mut dst) = (None, None);
        let mut e = Explain {
            src: IpAddr::from([0u8; 4]),
            dst: IpAddr::from([0u8; 4]),
            sport: 0,
            dport: 0,
            proto: 6,
            process: None,
            domain: None,
            local: false,
        };
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let not = |what: &str| bad(format!("{k}={v}: not {what}"));
            match k {
                "src" => src = Some(v.parse().map_err(|_| not("an address"))?),
                "dst" => dst = Some(v.parse().map_err(|_| not("an address"))?),
                "sport" => e.sport = v.parse().map_err(|_| not("a port"))?,
                "dport" => e.dport = v.parse().map_err(|_| not("a port"))?,
                "proto" => e.proto = v.parse().map_err(|_| not("a protocol number"))?,
                "process" => {
                    plain(k, v)?;
                    e.process = Some(v.to_string());
                }
                "domain" => {
                    plain(k, v)?;
                    e.domain = Some(v.to_string());
                }
                "local" => e.local = v == "1" || v == "true",
                _ => return Err(bad(format!("unknown parameter `{k}`"))),
            }
        }
        e.src = src.ok_or_else(|| bad("src and dst are required".into()))?;
        e.dst = dst.ok_or_else(|| bad("src and dst are required".into()))?;
        Ok(e)
    }
}

/// An admin answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The text.
    pub body: String,
}

/// Status and body of an HTTP/1.x answer (`Content-Length` is not needed:
/// the server closes after each answer).
pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .strip_prefix("HTTP/1.")?
        .get(2..)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Response {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain() -> Explain {
        Explain {
            src: "192.0.2.10".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            sport: 40000,
            dport: 443,
            proto: 17,
            process: Some("/usr/bin/curl".into()),
            domain: Some("app.example".into()),
            local: true,
        }
    }

    #[test]
    fn requests_round_trip_through_http() {
        for r in [
            Request::Status,
            Request::Reload,
            Request::Tenant {
                name: "corp".into(),
            },
            Request::Explain(explain()),
            Request::Flows,
            Request::Domains,
        ] {
            let target = r.target().unwrap();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            assert_eq!(Request::from_http(r.method(), path, query), Ok(r));
        }
    }

    #[test]
    fn refuses_what_is_not_a_request() {
        assert_eq!(
            Request::from_http("GET", "/metrics", ""),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            Request::from_http("GET", "/policy/reload", ""),
            Err(RouteError::Method)
        );
        assert_eq!(
            Request::from_http("POST", "/policy", ""),
            Err(RouteError::Method)
        );
        for q in ["", "name=", "name=a&b", "nom=x"] {
            assert!(
                matches!(
                    Request::from_http("POST", "/policy/tenant", q),
                    Err(RouteError::Bad(_))
                ),
                "{q}"
            );
        }
        for q in [
            "src=192.0.2.1",
            "src=x&dst=192.0.2.1",
            "src=192.0.2.1&dst=192.0.2.2&dport=70000",
            "src=192.0.2.1&dst=192.0.2.2&proto=tcp",
            "src=192.0.2.1&dst=192.0.2.2&what=1",
        ] {
            assert!(Explain::from_query(q).is_err(), "{q}");
        }
        // A value that cannot travel in a query is refused before sending.
        let mut e = explain();
        e.process = Some("/opt/My App/run".into());
        assert!(Request::Explain(e).target().is_err());
    }

    #[test]
    fn parses_answers() {
        assert_eq!(
            parse_response(b"HTTP/1.1 409 Conflict\r\nContent-Length: 3\r\n\r\nno\n"),
            Some(Response {
                status: 409,
                body: "no\n".into()
            })
        );
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b"HTTP/1.1 x\r\n\r\n"), None);
    }
}
