//! Enrolment on first boot: a box written with the image and a token
//! comes up managed by its controller.
//!
//! The token comes from `enrol.toml` on the data partition
//! (`controller = "https://HOST:PORT"`, `token = "sle_..."`; 0600, removed
//! once used) or from the kernel command line (`sluice.enrol=URL
//! sluice.token=TOKEN`, set in the ESP's loader entries). `sluice gateway
//! --enrol` (`sluice edge --enrol` on a box with the edge's file) makes
//! the key and gets the certificate (the token pins the controller's CA);
//! the box's file is then made a managed one: what the controller owns
//! removed, `[controller]` added (the file before is kept as
//! `gateway.toml.pre-enrol`).
//!
//! Enrolment is retried (the WAN may come up late, the controller may be
//! down) with a backoff capped at a minute, for as long as it takes: the
//! gateway starts after it, and until then the image's fail-closed table
//! forwards nothing. A refusal that trying again cannot change (a used or
//! unknown token, a malformed token or URL) ends it with an error on the
//! console: a new token is needed. A controller that does not show the
//! CA the token pins is tried again (nothing is sent to it). A
//! box already enrolled does nothing, whatever token it is given. A power
//! cut after the controller answered leaves the enrolment (the file is
//! made managed again at the next boot); one while the request is in
//! flight may leave a token the controller counts as used, and the box
//! refused: a new token is needed then too.
use std::{
    fmt,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// The token file, on the data partition.
pub const ENROL_FILE: &str = "enrol.toml";
/// Where enrolment keeps the key, certificate, CA and `enrolment.json`.
pub const STATE_DIR: &str = "enrolment";
/// What the box enrols as: an edge if it has the edge's file (and not
/// the gateway's), otherwise a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `gateway.toml`.
    Gateway,
    /// `edge.toml`.
    Edge,
}

impl Kind {
    /// The box's kind from its data partition: `None` on a box with
    /// neither file (a controller alone has nothing to enrol).
    #[must_use]
    pub fn of(data: &Path) -> Option<Self> {
        if data.join("gateway.toml").exists() {
            Some(Kind::Gateway)
        } else if data.join("edge.toml").exists() {
            Some(Kind::Edge)
        } else {
            None
        }
    }

    /// `gateway` or `edge` (the `sluice` subcommand).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "gateway",
            Kind::Edge => "edge",
        }
    }

    /// Its file on the data partition.
    #[must_use]
    pub fn file(self) -> String {
        format!("{}.toml", self.name())
    }
}

/// Why there is nothing to enrol with, or enrolment failed for good.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token file or command line is malformed.
    #[error("{0}")]
    Request(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// Which.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The gateway's file could not be made a managed one.
    #[error("{0}")]
    Config(#[from] sluice_config::ConfigError),
    /// The controller refused for good (a used or unknown token...):
    /// trying again with the same token cannot help.
    #[error(
        "enrolment refused: {0}. Put a new token in /var/lib/sluice/enrol.toml (or correct the URL) and reboot"
    )]
    Refused(String),
    /// The box is enrolled already, as another kind, or has nothing to
    /// enrol.
    #[error("{0}")]
    Box(String),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::File {
        path: path.to_path_buf(),
        source,
    }
}

/// Where to enrol and with what. `Debug` does not show the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// The controller's API, `https://HOST[:PORT]`.
    pub url: String,
    /// The one-time token (a secret).
    pub token: String,
    /// Where it came from (for messages).
    pub from: &'static str,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("url", &self.url)
            .field("token", &"<secret>")
            .field("from", &self.from)
            .finish()
    }
}

fn check(url: &str, token: &str, from: &'static str) -> Result<Request, Error> {
    let bad = |m: &str| Err(Error::Request(format!("{from}: {m}")));
    if !url.starts_with("https://")
        || url.len() > 512
        || url.len() <= "https://".len()
        || !url.bytes().all(|b| b.is_ascii_graphic())
    {
        return bad("the controller is not https://HOST[:PORT]");
    }
    if token.is_empty()
        || token.len() > 512
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return bad("the token is not one the controller printed");
    }
    Ok(Request {
        url: url.to_string(),
        token: token.to_string(),
        from,
    })
}

/// The request in `enrol.toml`'s text.
///
/// # Errors
/// Not TOML, unknown or missing keys, a bad URL or token.
pub fn from_file(text: &str) -> Result<Request, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        controller: String,
        token: String,
    }
    let f: File = toml::from_str(text).map_err(|e| {
        // The parser's message may quote the line: the token's.
        let what = e.message().lines().next().unwrap_or_default().to_string();
        let what = if what.contains("sle_") {
            "not `controller = \"https://HOST:PORT\"` and `token = \"...\"`".into()
        } else {
            what
        };
        Error::Request(format!("{ENROL_FILE}: {what}"))
    })?;
    check(&f.controller, &f.token, ENROL_FILE)
}

/// The request on a kernel command line, if it has one.
///
/// # Errors
/// Only one of the two parameters, or a bad URL or token.
pub fn from_cmdline(cmdline: &str) -> Result<Option<Request>, Error> {
    let get = |k: &str| {
        cmdline
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix(k))
            .next_back()
    };
    match (get("sluice.enrol="), get("sluice.token=")) {
        (None, None) => Ok(None),
        (Some(u), Some(t)) => check(u, t, "the kernel command line").map(Some),
        _ => Err(Error::Request(
            "the kernel command line: sluice.enrol=URL and sluice.token=TOKEN go together".into(),
        )),
    }
}

/// What [`run`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No token anywhere, not enrolled: the gateway runs on its own file.
    Nothing,
    /// Enrolled before (the file made managed again if a power cut
    /// stopped that).
    Already,
    /// Enrolled now.
    Enrolled,
}

/// The appliance's paths.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data partition (`/var/lib/sluice`).
    pub data: PathBuf,
    /// The `sluice` binary.
    pub sluice: PathBuf,
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline: PathBuf,
}

impl Paths {
    fn state(&self) -> PathBuf {
        self.data.join(STATE_DIR)
    }
}

/// Writes `bytes` to `path` durably: 0600, atomically and synced (as the
/// gateway writes the controller's files), then the directory synced (a
/// power cut must not bring the old file back).
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    sluice_config::managed::write_private(path, bytes).map_err(file_err(path))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_err(dir))
}

/// Makes the box's file a managed one, unless it is one already
/// (keeping the file before as `<file>.pre-enrol`).
fn make_managed(p: &Paths, kind: Kind) -> Result<bool, Error> {
    let path = p.data.join(kind.file());
    let src = std::fs::read_to_string(&path).map_err(file_err(&path))?;
    if sluice_config::managed::section(&path, &src)?.is_some() {
        return Ok(false);
    }
    let managed =
        sluice_config::managed::for_controller(&path, &src, &p.state(), kind == Kind::Edge)?;
    let file = kind.file();
    write_durably(&p.data.join(format!("{file}.pre-enrol")), src.as_bytes())?;
    let text = format!(
        "# sluice appliance: managed by the controller since enrolment (the file\n\
         # before is {file}.pre-enrol). The controller owns the policy, the\n\
         # edges or gateways, and the certificates; what is here stays the box's.\n{managed}"
    );
    write_durably(&path, text.as_bytes())?;
    Ok(true)
}

fn remove_token(p: &Paths) -> Result<(), Error> {
    let f = p.data.join(ENROL_FILE);
    match std::fs::remove_file(&f) {
        Ok(()) => sync_dir(&f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_err(&f)(e)),
    }
}

/// The largest token file read.
const MAX_FILE: u64 = 4096;

/// The token file's text, if there is one: a regular file (not a link,
/// not a FIFO) of at most 4 KiB, made 0600 through its descriptor.
fn read_token_file(f: &Path) -> Result<Option<String>, Error> {
    use std::io::Read as _;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(f)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(f)(e)),
    };
    let meta = file.metadata().map_err(file_err(f))?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(Error::Request(format!(
            "{ENROL_FILE}: not a regular file of at most {MAX_FILE} bytes"
        )));
    }
    // A secret: private from now on, whatever it was written with.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(file_err(f))?;
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(file_err(f))?;
    Ok(Some(text))
}

/// The request, from the token file first, then the command line.
fn request(p: &Paths) -> Result<Option<Request>, Error> {
    let f = p.data.join(ENROL_FILE);
    if let Some(text) = read_token_file(&f)? {
        return from_file(&text).map(Some);
    }
    let cmdline = std::fs::read_to_string(&p.cmdline).map_err(file_err(&p.cmdline))?;
    from_cmdline(&cmdline)
}

/// `sluice ... --enrol`'s exit status when trying again cannot help
/// (`sluice_runtime::enrol::EXIT_REFUSED`).
const EXIT_REFUSED: i32 = 3;
/// How long one attempt may take (a controller, or something in its
/// place, that answers slowly must not hold the box), in seconds.
const ATTEMPT_SECS: u32 = 120;
/// `timeout`'s exit status when it ended the command.
const TIMED_OUT: i32 = 124;

/// Why one attempt failed.
enum Failed {
    /// Trying again may help (the message).
    Again(String),
    /// It cannot.
    ForGood(String),
}

/// One attempt: `sluice gateway --enrol URL --state-dir DIR` with the
/// token in its environment (not in the process list), ended by
/// `timeout` after [`ATTEMPT_SECS`]. The message is the last line it
/// printed.
fn attempt(p: &Paths, kind: Kind, r: &Request) -> Result<String, Failed> {
    let out = Command::new("timeout")
        .args(["--kill-after=5", &ATTEMPT_SECS.to_string()])
        .arg(&p.sluice)
        .args([kind.name(), "--enrol", &r.url, "--state-dir"])
        .arg(p.state())
        .env("SLUICE_ENROL_TOKEN", &r.token)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Failed::Again(format!("timeout {}: {e}", p.sluice.display())))?;
    let last = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    match out.status.code() {
        Some(0) => Ok(last(&out.stdout)),
        Some(EXIT_REFUSED) => Err(Failed::ForGood(last(&out.stderr))),
        Some(TIMED_OUT) => Err(Failed::Again(format!("no answer within {ATTEMPT_SECS} s"))),
        _ => Err(Failed::Again(format!(
            "{} ({})",
            last(&out.stderr),
            out.status
        ))),
    }
}

/// Enrols if there is a token and the box is not enrolled, retrying
/// until it is (`retry` the first wait, doubled up to a minute);
/// `say` gets every line for the console.
///
/// # Errors
/// A malformed token file or command line (enrolment is not tried), a
/// file that cannot be written, a gateway file that is not TOML.
pub fn run(p: &Paths, retry: Duration, mut say: impl FnMut(&str)) -> Result<Outcome, Error> {
    let kind = Kind::of(&p.data);
    let enrolled = p.state().join(sluice_config::managed::ENROLMENT_FILE);
    if enrolled.exists() {
        let Some(kind) = kind else {
            return Err(Error::Box(
                "enrolled, but the box has neither gateway.toml nor edge.toml".into(),
            ));
        };
        let text = std::fs::read_to_string(&enrolled).map_err(file_err(&enrolled))?;
        let was = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("kind")?.as_str().map(str::to_string));
        if was.as_deref().is_some_and(|w| w != kind.name()) {
            return Err(Error::Box(format!(
                "enrolled as {} but the box now has {}: remove {} to enrol again",
                was.unwrap_or_default(),
                kind.file(),
                p.state().display()
            )));
        }
        if make_managed(p, kind)? {
            say(&format!(
                "{} made managed again (enrolled before a power cut)",
                kind.file()
            ));
        }
        if p.data.join(ENROL_FILE).exists() {
            say(&format!(
                "{ENROL_FILE} ignored and removed: enrolled already (to enrol again, remove {})",
                p.state().display()
            ));
        }
        remove_token(p)?;
        return Ok(Outcome::Already);
    }
    let Some(r) = request(p)? else {
        return Ok(Outcome::Nothing);
    };
    let Some(kind) = kind else {
        return Err(Error::Box(format!(
            "a token from {}, but the box has neither gateway.toml nor edge.toml: nothing to enrol (a controller does not enrol)",
            r.from
        )));
    };
    let file = kind.file();
    say(&format!(
        "enrolling as {} with the controller at {} (token from {})",
        kind.name(),
        r.url,
        r.from
    ));
    let mut wait = retry;
    loop {
        match attempt(p, kind, &r) {
            Ok(line) => {
                say(&line);
                break;
            }
            Err(Failed::ForGood(e)) => return Err(Error::Refused(e)),
            Err(Failed::Again(e)) => {
                say(&format!(
                    "enrolment failed: {e}; trying again in {} s",
                    wait.as_secs()
                ));
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
    make_managed(p, kind)?;
    remove_token(p)?;
    say(&format!("{file} is now managed by the controller"));
    Ok(Outcome::Enrolled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "sle_abcDEF123-_.0123456789abcdef";

    #[test]
    fn the_token_file_is_strict_and_never_shows_the_token() {
        let r = from_file(&format!(
            "controller = \"https://198.51.100.2:8443\"\ntoken = \"{TOKEN}\"\n"
        ))
        .unwrap();
        assert_eq!(r.url, "https://198.51.100.2:8443");
        assert_eq!(r.token, TOKEN);
        assert!(!format!("{r:?}").contains("sle_"));
        for bad in [
            "controller = \"http://198.51.100.2\"\ntoken = \"sle_x\"\n",
            "controller = \"https://198.51.100.2\"\n",
            "controller = \"https://198.51.100.2\"\ntoken = \"sle_x\"\nextra = 1\n",
            "controller = \"https://198.51.100.2\"\ntoken = \"sle x\"\n",
            "controller = \"https://\"\ntoken = \"sle_x\"\n",
            &format!(
                "controller = \"https://a\"\ntoken = \"{}\"\n",
                "a".repeat(600)
            ),
            "garbage sle_secret",
        ] {
            let e = from_file(bad).unwrap_err().to_string();
            assert!(!e.contains("sle_"), "{bad}: the error shows the token: {e}");
        }
    }

    #[test]
    fn the_command_line_has_both_parameters_or_none() {
        assert_eq!(
            from_cmdline("BOOT_IMAGE=/vmlinuz root=x quiet").unwrap(),
            None
        );
        let r = from_cmdline(&format!(
            "console=ttyS0 sluice.enrol=https://ctl.example:8443 sluice.token={TOKEN} panic=10\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.url, "https://ctl.example:8443");
        assert_eq!(r.token, TOKEN);
        assert!(from_cmdline("sluice.enrol=https://ctl.example").is_err());
        assert!(from_cmdline(&format!("sluice.token={TOKEN}")).is_err());
        assert!(from_cmdline("sluice.enrol=ftp://x sluice.token=sle_x").is_err());
    }
}
