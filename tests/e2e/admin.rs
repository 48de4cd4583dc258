//! The gateway's admin API in the lab: the metrics listener answers
//! `/metrics` only and refuses foreign `Host` headers; the admin socket
//! serves root (through the CLI) and refuses every other local user, at
//! the socket or by its credentials; clients that dribble one byte a
//! second stall neither.
//!
//! "Another local user" is `nobody` (uid 65534) through `setpriv`; the
//! policy generation (a metric) shows whether a request took effect.
//!
//! Also here: a gateway whose certificate the CA revoked (`sluice pki
//! revoke`, the edge's `crl`) is refused by the edge while another
//! connects.
use std::time::{Duration, Instant};

use sluice_lab::{
    Host, Lab,
    deploy::{GATEWAY_METRICS, Sluice, gateway_metric, metrics_text, sum},
    require_root,
};

use super::{bin, logs, setup};

/// `argv` as `nobody`, with no supplementary groups.
fn as_nobody<'a>(argv: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "setpriv",
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
    ];
    v.extend_from_slice(argv);
    v
}

/// The HTTP status `curl` got (`000` when it could not connect).
fn status(lab: &Lab, argv: &[&str]) -> String {
    let out = lab.run(Host::Gw, argv);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The admin routes, as the old metrics listener served them.
const ADMIN_ROUTES: [(&str, &str); 6] = [
    ("POST", "/policy/reload"),
    ("POST", "/policy/tenant?name=corp"),
    ("GET", "/flows"),
    ("GET", "/policy"),
    (
        "GET",
        "/policy/explain?src=192.0.2.10&dst=203.0.113.10&dport=443",
    ),
    ("GET", "/bypass/dns"),
];

#[test]
fn metrics_listener_serves_metrics_only_and_checks_the_host() {
    if !require_root("metrics_listener_serves_metrics_only_and_checks_the_host") {
        return;
    }
    let lab = Lab::new();
    let _s = setup(&lab);
    let generation = || gateway_metric(&lab, "sluice_policy_generation", "");
    assert_eq!(generation(), 1, "{}", logs(&lab));
    for (method, path) in ADMIN_ROUTES {
        let url = format!("http://127.0.0.1:9477{path}");
        for argv in [
            as_nobody(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "-X",
                method,
                &url,
            ]),
            vec![
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "-X",
                method,
                &url,
            ],
        ] {
            let code = status(&lab, &argv);
            assert_eq!(
                code, "404",
                "{method} {path} on the metrics listener ({argv:?}): HTTP {code}"
            );
        }
    }
    assert_eq!(
        generation(),
        1,
        "a request on the metrics listener changed the policy"
    );
    // DNS rebinding: a page whose own name now points at the gateway
    // sends that name.
    let code = status(
        &lab,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-H",
            "Host: rebind.evil.example",
            "http://127.0.0.1:9477/metrics",
        ],
    );
    assert_eq!(code, "421", "a foreign Host header was served");
    let code = status(
        &lab,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "http://localhost:9477/metrics",
        ],
    );
    assert_eq!(code, "200", "localhost");
}

#[test]
#[allow(
    clippy::too_many_lines,
    reason = "one story: nobody refused each way, then root served"
)]
fn admin_socket_serves_root_and_refuses_other_users() {
    if !require_root("admin_socket_serves_root_and_refuses_other_users") {
        return;
    }
    let lab = Lab::new();
    let s = setup(&lab);
    let generation = || gateway_metric(&lab, "sluice_policy_generation", "");
    let b = bin().to_string_lossy().into_owned();
    let cfg = s
        .conf_dir()
        .join("gateway.toml")
        .to_string_lossy()
        .into_owned();
    let sock = s
        .conf_dir()
        .join("admin.sock")
        .to_string_lossy()
        .into_owned();

    // nobody, through the CLI: refused at the socket (mode 0600).
    for args in [
        vec!["policy", "reload", "--config", &cfg],
        vec!["policy", "tenant", "--config", &cfg, "corp"],
        vec!["policy", "status", "--config", &cfg],
        vec!["flows", "--config", &cfg],
    ] {
        let mut argv = vec![b.as_str()];
        argv.extend(args.iter().copied());
        let out = lab.run(Host::Gw, &as_nobody(&argv));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "nobody ran `sluice {}`: {}{err}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains("admin") && err.contains("ermission denied"),
            "sluice {}: {err}",
            args.join(" ")
        );
    }
    assert_eq!(generation(), 1, "nobody changed the policy\n{}", logs(&lab));
    let meta = std::fs::metadata(&sock).expect("the admin socket exists");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    // Raw requests on the socket: nobody cannot connect ...
    let curl_unix = |method: &str, path: &str| {
        vec![
            "curl".to_string(),
            "-s".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--max-time".into(),
            "10".into(),
            "--unix-socket".into(),
            sock.clone(),
            "-X".into(),
            method.into(),
            format!("http://localhost{path}"),
        ]
    };
    for (method, path) in ADMIN_ROUTES {
        let argv = curl_unix(method, path);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(status(&lab, &as_nobody(&argv)), "000", "{method} {path}");
    }
    // ... and when the socket's mode lets it (a mistake), its credentials
    // are refused.
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    for (method, path) in ADMIN_ROUTES {
        let argv = curl_unix(method, path);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(status(&lab, &as_nobody(&argv)), "403", "{method} {path}");
    }
    assert_eq!(generation(), 1, "nobody changed the policy\n{}", logs(&lab));

    // Root, through the CLI.
    let root = |args: &[&str]| {
        let mut argv = vec![b.as_str()];
        argv.extend_from_slice(args);
        lab.run_ok(Host::Gw, &argv)
    };
    let out = root(&["policy", "reload", "--config", &cfg]);
    assert!(out.contains("generation 2 in force"), "{out}");
    assert_eq!(generation(), 2);
    let out = root(&["policy", "status", "--config", &cfg]);
    assert!(out.contains("generation: 2"), "{out}");
    let out = root(&["flows", "--config", &cfg]);
    assert!(out.contains("endpoint mode is off"), "{out}");
    let out = root(&[
        "policy",
        "explain",
        "--config",
        &cfg,
        "--live",
        "--src",
        "192.0.2.10",
        "--dst",
        "203.0.113.20",
    ]);
    assert!(out.contains("outcome:"), "{out}");
    // A refused switch is an error of the CLI, with the gateway's reason.
    let out = lab.run(
        Host::Gw,
        &[&b, "policy", "tenant", "--config", &cfg, "corp"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(generation(), 2);
}

/// Ten clients on the metrics listener and ten on the admin socket send
/// one byte a second; the metrics and the CLI are answered at once all
/// the same (bounded: 2 s, where the old one-request-at-a-time server
/// made them wait 2 s per slow client).
#[test]
fn slow_clients_stall_neither_metrics_nor_the_admin_socket() {
    if !require_root("slow_clients_stall_neither_metrics_nor_the_admin_socket") {
        return;
    }
    let lab = Lab::new();
    let s = setup(&lab);
    let b = bin().to_string_lossy().into_owned();
    let cfg = s
        .conf_dir()
        .join("gateway.toml")
        .to_string_lossy()
        .into_owned();
    let sock = s
        .conf_dir()
        .join("admin.sock")
        .to_string_lossy()
        .into_owned();
    let script = format!(
        "import socket, time\n\
         conns = []\n\
         for i in range(10):\n\
         \x20   c = socket.create_connection(('127.0.0.1', 9477)); conns.append(c)\n\
         for i in range(10):\n\
         \x20   try:\n\
         \x20       u = socket.socket(socket.AF_UNIX); u.connect({sock:?}); conns.append(u)\n\
         \x20   except OSError as e:\n\
         \x20       print('admin socket:', e, flush=True)\n\
         print('open', len(conns), flush=True)\n\
         for t in range(25):\n\
         \x20   for c in conns:\n\
         \x20       try: c.send(b'G')\n\
         \x20       except OSError: pass\n\
         \x20   time.sleep(1)\n"
    );
    let slow = lab.spawn(Host::Gw, "slow-clients", &["python3", "-c", &script]);
    lab.wait_for("the slow clients", Duration::from_secs(10), || {
        lab.log("slow-clients").contains("open")
    });
    for round in 0..5 {
        let t = Instant::now();
        let out = lab.run(
            Host::Gw,
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "15",
                "-o",
                "/dev/null",
                "http://127.0.0.1:9477/metrics",
            ],
        );
        let took = t.elapsed();
        assert!(
            out.status.success() && took < Duration::from_secs(2),
            "round {round}: metrics answered after {took:?} ({}) behind slow clients",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = Instant::now();
        let out = lab.run(Host::Gw, &[&b, "policy", "status", "--config", &cfg]);
        let took = t.elapsed();
        assert!(
            out.status.success() && took < Duration::from_secs(2),
            "round {round}: the admin socket answered after {took:?} behind slow clients: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(700));
    }
    lab.stop(slow);
    assert!(
        lab.is_running(s.gateway.expect("gateway")),
        "the gateway stopped:\n{}",
        logs(&lab)
    );
}

/// A stolen gateway is cut off without a new CA: `sluice pki revoke`
/// lists branch-2's certificate, the edge loads the list (`crl`), and
/// branch-2's tunnel never comes up (the edge refuses it at the
/// handshake) while branch-1's does.
#[test]
fn a_revoked_gateway_is_refused_by_the_edge() {
    if !require_root("a_revoked_gateway_is_refused_by_the_edge") {
        return;
    }
    let lab = Lab::new();
    let mut s = Sluice::prepare(&lab, bin(), str::to_string);
    let b = bin().to_string_lossy().into_owned();
    let conf = s.conf_dir().to_path_buf();
    let dir = conf.to_string_lossy().into_owned();
    let out = lab.run_ok(
        Host::Client,
        &[&b, "pki", "revoke", "--dir", &dir, "--gateway", "branch-2"],
    );
    assert!(out.contains("1 added"), "{out}");
    s.edit_edge(|t| {
        t.replacen(
            "key = \"edge.key\"\n",
            "key = \"edge.key\"\ncrl = \"crl.pem\"\n",
            1,
        )
    });
    s.start_edge();
    s.start_gateway();
    // branch-2, as Sluice::start_second_gateway writes it, in gw2.
    let text = std::fs::read_to_string(conf.join("gateway.toml")).unwrap();
    let text = text
        .replace("name = \"branch-1\"", "name = \"branch-2\"")
        .replace("branch-1.pem", "branch-2.pem")
        .replace("branch-1.key", "branch-2.key")
        .replace(
            "admin_socket = \"admin.sock\"",
            "admin_socket = \"admin2.sock\"",
        );
    std::fs::write(conf.join("gateway2.toml"), text).unwrap();
    let cfg2 = conf.join("gateway2.toml").to_string_lossy().into_owned();
    let gw2 = lab.spawn_env(
        Host::Gw2,
        "gateway2",
        &[&b, "gateway", "--config", &cfg2],
        &[("RUST_LOG", "info")],
    );
    let failures = || {
        sum(
            &metrics_text(&lab, Host::Gw2, GATEWAY_METRICS),
            "sluice_gateway_tunnel_failures_total",
            "",
        )
    };
    lab.wait_for(
        "branch-2's handshakes to fail",
        Duration::from_secs(30),
        || {
            assert!(
                lab.is_running(gw2),
                "gateway2 exited:\n{}",
                lab.log("gateway2")
            );
            failures() >= 2
        },
    );
    let text = metrics_text(&lab, Host::Gw2, GATEWAY_METRICS);
    assert_eq!(
        sum(&text, "sluice_gateway_tunnel_up", ""),
        0,
        "branch-2's tunnel is up\n{}\n--- edge ---\n{}",
        lab.log("gateway2"),
        lab.log("edge")
    );
    // The edge's alert: 44, certificate_revoked (RFC 8446).
    assert!(
        lab.log("gateway2").contains("TLS alert 44"),
        "gateway2 log:\n{}",
        lab.log("gateway2")
    );
    // branch-1 was not touched.
    assert_eq!(gateway_metric(&lab, "sluice_gateway_tunnel_up", ""), 1);
    lab.stop(gw2);
}
