//! `sluice gateway --enrol URL --token T` against a real controller
//! (`sluice controller run` on loopback): the token's CA pin is checked
//! before anything is sent, the key is made and kept here (0600), the
//! certificate is the controller CA's for the gateway's name, and the token
//! works once.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn curl(ca: &Path, args: &[&str]) -> serde_json::Value {
    let out = ok(Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .unwrap());
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

#[test]
fn a_gateway_enrols_with_a_pinned_one_time_token() {
    let dir = tempfile_dir();
    let (api, agent) = (free_port(), free_port());
    let cfg = dir.join("controller.toml");
    std::fs::write(
        &cfg,
        format!(
            "[controller]\nlisten = \"127.0.0.1:{api}\"\nagent_listen = \"127.0.0.1:{agent}\"\nstate_dir = \"{}\"\nserver_names = [\"127.0.0.1\"]\n",
            dir.join("ctl").display()
        ),
    )
    .unwrap();
    let printed = ok(Command::new(SLUICE)
        .args(["controller", "--config"])
        .arg(&cfg)
        .args(["create-client", "--name", "bootstrap", "--scope", "admin"])
        .output()
        .unwrap());
    let get = |k: &str| {
        printed
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    let (id, secret) = (get("client_id="), get("client_secret="));
    let _ctl = Controller(
        Command::new(SLUICE)
            .args(["controller", "--config"])
            .arg(&cfg)
            .arg("run")
            .spawn()
            .unwrap(),
    );
    let ca = dir.join("ctl/ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ca.exists() || std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(Instant::now() < deadline, "the controller did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{api}");
    let tok = curl(
        &ca,
        &[
            "-u",
            &format!("{id}:{secret}"),
            "-d",
            "grant_type=client_credentials",
            &format!("{url}/oauth/token"),
        ],
    );
    let auth = format!(
        "Authorization: Bearer {}",
        tok["access_token"].as_str().unwrap()
    );
    let gw = curl(
        &ca,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"name":"branch-7","prefixes":["192.0.2.0/24"]}"#,
            &format!("{url}/api/v1/gateways"),
        ],
    );
    let gw = gw["id"].as_str().unwrap();
    let t = curl(
        &ca,
        &[
            "-H",
            &auth,
            "-X",
            "POST",
            &format!("{url}/api/v1/gateways/{gw}/enrolment"),
        ],
    );
    let token = t["token"].as_str().unwrap().to_string();

    // A token whose pin is not this controller's CA: refused before
    // anything is sent (the real token still works afterwards).
    let (secret_part, _) = token.rsplit_once('.').unwrap();
    let wrong = format!("{secret_part}.{}", "0".repeat(64));
    let state = dir.join("gw");
    let enrol = |t: &str| {
        Command::new(SLUICE)
            .args(["gateway", "--enrol", &url, "--token", t, "--state-dir"])
            .arg(&state)
            .output()
            .unwrap()
    };
    let o = enrol(&wrong);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not present the CA"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!state.join("key.pem").exists());
    let o = enrol(&token);
    let out = ok(o);
    assert!(out.contains("enrolled as gateway `branch-7`"), "{out}");
    let mode = std::fs::metadata(state.join("key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(state.join("ca.pem")).unwrap(),
        std::fs::read_to_string(&ca).unwrap()
    );
    // The certificate is for the gateway's name, signed by the CA, for the
    // key made here.
    let cert = std::fs::read_to_string(state.join("cert.pem")).unwrap();
    let der = pem_body(&cert);
    let ca_der = pem_body(&std::fs::read_to_string(&ca).unwrap());
    let text = ok(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-issuer", "-in"])
        .arg(state.join("cert.pem"))
        .output()
        .unwrap());
    assert!(
        text.contains("CN=branch-7") || text.contains("CN = branch-7"),
        "{text}"
    );
    assert!(der != ca_der);
    let keymod = ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(state.join("key.pem"))
        .output()
        .unwrap());
    let certmod = ok(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(state.join("cert.pem"))
        .output()
        .unwrap());
    assert_eq!(keymod, certmod, "the certificate is for the key made here");
    let verify = ok(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca)
        .arg(state.join("cert.pem"))
        .output()
        .unwrap());
    assert!(verify.contains("OK"), "{verify}");
    // Once only.
    let o = enrol(&token);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown, used or expired"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    b64.into_bytes()
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-cli-enrol-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
