//! Endpoint mode on the gateway host itself: its own traffic is tunnelled,
//! listed processes bypass from their first SYN, the list reloads without
//! restarting anything, the flow table names processes and verdicts, and
//! the host's own DNS lookups drive the domain bypass.
use std::{path::Path, time::Duration};

use super::{HTTP, bin, curl, logs, url};
use sluice_lab::{
    Host, Lab, addr, counter,
    deploy::{Sluice, edge_with_endpoint, processes_line, with_endpoint},
    require_root,
};

const SIGHUP: i32 = 1;
const SIGKILL: i32 = 9;

/// Copies `src` to `dst` (making its directory), executable.
fn install(src: &str, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copying {src} to {}: {e}", dst.display()));
}

fn which(cmd: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!p.is_empty(), "{cmd} is not installed");
    std::fs::canonicalize(&p)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// What the server saw for one `curl`-like run from the gateway host, and
/// which way its SYN went.
fn fetch(lab: &Lab, exe: &Path) -> (String, u64, u64) {
    lab.reset_counters();
    let out = lab.run(
        Host::Gw,
        &[
            &exe.to_string_lossy(),
            "-sS",
            "--fail",
            "--max-time",
            "10",
            &url(addr::TUNNELLED_V4, "/whoami"),
        ],
    );
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr),
        logs(lab)
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        lab.nft_counter(counter::GW_SYN_TO_TUNNELLED_V4),
        lab.nft_counter(counter::EDGE_SYN_TO_TUNNELLED_V4),
    )
}

#[test]
fn endpoint_mode_tun_tunnels_the_host_and_listed_processes_bypass_from_their_first_syn() {
    if require_root(
        "endpoint_mode_tun_tunnels_the_host_and_listed_processes_bypass_from_their_first_syn",
    ) {
        endpoint_mode("tun", true);
    }
}

#[test]
fn endpoint_mode_veth_tunnels_the_host_and_listed_processes_bypass_from_their_first_syn() {
    if require_root(
        "endpoint_mode_veth_tunnels_the_host_and_listed_processes_bypass_from_their_first_syn",
    ) {
        endpoint_mode("veth", true);
    }
}

#[test]
fn endpoint_mode_without_a_lan_tunnels_the_host_and_listed_processes_bypass() {
    if require_root("endpoint_mode_without_a_lan_tunnels_the_host_and_listed_processes_bypass") {
        endpoint_mode("tun", false);
    }
}

/// The whole scenario over one endpoint path (`tun` or `veth`), on the
/// gateway host (`lan`) or on a host without a LAN (no `gateway.lan`).
#[allow(clippy::too_many_lines, reason = "one linear scenario")]
fn endpoint_mode(path: &str, lan: bool) {
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, super::UDP);
    lab.spawn_dns("dnsmasq", 10);
    // Four copies of curl and two of bash, under different names and
    // paths: one listed by name, one by a path pattern, one by its digest
    // (bytes appended, which the ELF loader ignores, make it unique), the
    // rest not.
    let apps = lab.dir().join("apps");
    let (curl_bin, bash_bin) = (which("curl"), which("bash"));
    let by_name = apps.join("bin/fetch-byname");
    let by_path = apps.join("opt/vendor/app/fetch-bypath");
    let plain = apps.join("bin/fetch-plain");
    let holder = apps.join("bin/holder");
    let keeper = apps.join("bin/keeper");
    for p in [&by_name, &by_path, &plain] {
        install(&curl_bin, p);
    }
    install(&bash_bin, &holder);
    install(&bash_bin, &keeper);
    let by_digest = apps.join("bin/fetch-bydigest");
    let mut bytes = std::fs::read(&curl_bin).unwrap();
    bytes.extend_from_slice(format!("\nsluice lab {}\n", lab.dir().display()).as_bytes());
    std::fs::write(&by_digest, &bytes).unwrap();
    std::fs::set_permissions(
        &by_digest,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let digest = sluice_core::process::sha256_read(std::fs::File::open(&by_digest).unwrap())
        .unwrap()
        .iter()
        .fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
    let mut listed = vec![
        "fetch-byname".to_string(),
        format!("{}/opt/**/fetch-bypath", apps.display()),
        format!("sha256:{digest}"),
    ];
    let mut s = Sluice::prepare(&lab, bin(), |t| {
        // The answer's own TTL (dnsmasq: 10 s), not the 30 s floor: the
        // entry below expires well inside the test's wait.
        let t = with_endpoint(t, &listed)
            .replace("[endpoint]\n", &format!("[endpoint]\npath = \"{path}\"\n"))
            .replace("[bypass]\n", "[bypass]\ndns_ttl_floor_secs = 1\n");
        if lan {
            t
        } else {
            t.replace("lan = \"lan0\"\n", "")
        }
    });
    s.edit_edge(edge_with_endpoint);
    s.start_edge();
    s.start_gateway();
    let edge = addr::EDGE_WAN_V4.to_string();
    let direct = addr::GW_WAN_V4.to_string();

    // The host's own traffic: tunnelled, replies back to the socket.
    let (seen, gw_syn, edge_syn) = fetch(&lab, &plain);
    assert_eq!(seen, edge, "unlisted program: tunnelled\n{}", logs(&lab));
    assert_eq!((gw_syn, edge_syn), (0, 1), "unlisted: its SYN via the edge");
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    // Listed by name and by path: direct from the first SYN, none of it
    // through the edge.
    for (exe, what) in [
        (&by_name, "by name"),
        (&by_path, "by path"),
        (&by_digest, "by digest"),
    ] {
        let (seen, gw_syn, edge_syn) = fetch(&lab, exe);
        assert_eq!(seen, direct, "listed {what}: direct\n{}", logs(&lab));
        assert_eq!(
            (gw_syn, edge_syn),
            (1, 0),
            "listed {what}: its one SYN left directly"
        );
        assert_eq!(lab.nft_counter(counter::EDGE_TO_TUNNELLED_V4), 0);
    }
    // An exec of a listed program that fails after the kernel opened the
    // file (an argument longer than the kernel takes: E2BIG) leaves the
    // caller, which keeps running its own code, tunnelled.
    let script = format!(
        "import os, urllib.request\nprint(os.getpid())\ntry:\n    os.execv({:?}, ['x' * 200000])\nexcept OSError:\n    pass\nprint(urllib.request.urlopen({:?}, timeout=10).read().decode().strip())\n",
        by_path.to_string_lossy(),
        url(addr::TUNNELLED_V4, "/whoami")
    );
    let said = lab.run_ok(Host::Gw, &[sluice_lab::python(), "-c", &script]);
    let (pid, seen) = said.trim().split_once('\n').expect("two lines");
    assert_eq!(
        seen.trim(),
        edge,
        "a failed exec of a listed program\n{}",
        logs(&lab)
    );
    // sluice did grant that exec (the kernel held it); the kernel did not
    // apply the grant (the exec failed).
    let granted = format!("process {} ({}) bypasses", pid.trim(), by_path.display());
    assert!(
        lab.log("gateway").contains(&granted),
        "no grant logged: {granted}"
    );

    // A UDP socket connected to a bypassed server carries the bypass mark;
    // sending from it to a tunnelled server is refused, not sent direct.
    lab.reset_counters();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.connect(({:?}, 9000))\ns.send(b'direct')\ntry:\n    s.sendto(b'leak', ({:?}, 9000))\n    print('sent')\nexcept PermissionError:\n    print('refused')\n",
        addr::BYPASSED_V4.to_string(),
        addr::TUNNELLED_V4.to_string()
    );
    let said = lab.run_ok(Host::Gw, &[sluice_lab::python(), "-c", &script]);
    assert_eq!(said.trim(), "refused", "{}", logs(&lab));
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    assert!(lab.nft_counter(counter::GW_TO_BYPASSED_V4) >= 1);

    // The LAN is served as before (or there is none).
    if lan {
        assert_eq!(
            curl(&lab, &[&url(addr::TUNNELLED_V4, "/whoami")]).trim(),
            edge
        );
        assert_eq!(
            curl(&lab, &[&url(addr::BYPASSED_V4, "/whoami")]).trim(),
            direct
        );
    } else {
        assert!(!lab.log("gateway").contains("classifier attached to lan0"));
    }

    // The flow table: an open connection of an unlisted program.
    let target = format!("{}:{HTTP}", addr::TUNNELLED_V4);
    let script = format!(
        "exec 3<>/dev/tcp/{}/{HTTP}; read -t 30 -u 3 line",
        addr::TUNNELLED_V4
    );
    let keep = lab.spawn(
        Host::Gw,
        "keeper",
        &[&keeper.to_string_lossy(), "-c", &script],
    );
    let conf = s.conf_dir().join("gateway.toml");
    let flows = || {
        lab.run_ok(
            Host::Gw,
            &[
                &bin().to_string_lossy(),
                "flows",
                "--config",
                &conf.to_string_lossy(),
            ],
        )
    };
    lab.wait_for("the keeper's flow", Duration::from_secs(10), || {
        flows()
            .lines()
            .any(|l| l.contains("keeper") && l.contains(&target) && l.contains(" tunnel "))
    });
    lab.stop(keep);

    // A running, unlisted program connecting in a loop; listing it (file
    // rewritten, SIGHUP) turns its next connections direct, without
    // restarting it.
    let answers = lab.dir().join("holder.out");
    let script = format!(
        "for i in $(seq 1 120); do exec 3<>/dev/tcp/{}/{HTTP} || exit 1; \
         printf 'GET /whoami HTTP/1.0\\r\\n\\r\\n' >&3; tail -n1 <&3 >> {}; exec 3<&-; sleep 0.25; done",
        addr::TUNNELLED_V4,
        answers.display()
    );
    let looping = lab.spawn(
        Host::Gw,
        "holder",
        &[&holder.to_string_lossy(), "-c", &script],
    );
    let last = || {
        std::fs::read_to_string(&answers)
            .unwrap_or_default()
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    };
    lab.wait_for(
        "the holder's first answers",
        Duration::from_secs(10),
        || last() == edge,
    );
    listed.push("holder".into());
    let text = std::fs::read_to_string(&conf).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("processes = "))
        .unwrap()
        .to_string();
    std::fs::write(
        &conf,
        text.replace(&old, processes_line(&listed).trim_end()),
    )
    .unwrap();
    lab.signal(s.gateway.unwrap(), SIGHUP);
    lab.wait_for(
        "the running holder to go direct",
        Duration::from_secs(15),
        || last() == direct,
    );
    assert!(lab.is_running(looping), "the holder was not restarted");
    assert_eq!(s.gateway_metric("sluice_endpoint_reloads_total", ""), 1);
    lab.stop(looping);

    // The host's own DNS lookups feed the domain bypass: after the answer
    // names the tunnelled server, the host's next connection to it (from
    // an unlisted program) goes direct.
    let answer = lab.dig(Host::Gw, addr::DNS_V4.into(), "www.bypass.example", false);
    assert_eq!(
        answer.trim(),
        addr::TUNNELLED_V4.to_string(),
        "dig: {answer:?}"
    );
    let (seen, gw_syn, edge_syn) = fetch(&lab, &plain);
    assert_eq!(
        seen,
        direct,
        "after the host's own lookup: direct\n{}",
        logs(&lab)
    );
    assert_eq!((gw_syn, edge_syn), (1, 0));
    let m = s.gateway_metrics();
    assert!(
        sluice_lab::deploy::sum(
            &m,
            "sluice_endpoint_socket_events_total",
            "event=\"connect_bypass_process\""
        ) >= 2,
        "{m}"
    );
    assert!(
        sluice_lab::deploy::sum(
            &m,
            "sluice_endpoint_socket_events_total",
            "event=\"connect_bypass_destination\""
        ) >= 1,
        "{m}"
    );

    // Fail closed: with the edge down, and with sluice killed, the host's
    // tunnelled traffic goes nowhere, never direct.
    let refused = |when: &str| {
        lab.reset_counters();
        let out = lab.run(
            Host::Gw,
            &[
                &plain.to_string_lossy(),
                "-sS",
                "--max-time",
                "3",
                &url(addr::TUNNELLED_V4, "/whoami"),
            ],
        );
        assert!(
            !out.status.success(),
            "{when}: the host reached the tunnelled server"
        );
        assert_eq!(
            lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
            0,
            "{when}: sent direct"
        );
    };
    // (The DNS entry above made the tunnelled server direct; let it expire:
    // 10 s after the answer, the wait leaves room for a loaded machine.)
    lab.wait_for("the DNS entry to expire", Duration::from_secs(60), || {
        s.gateway_metric("sluice_dns_bypass_expired_total", "") >= 1
    });
    s.stop_edge();
    s.wait_tunnel(false, Duration::from_secs(20));
    refused("edge down");
    let gw = s.gateway.take().unwrap();
    lab.signal(gw, SIGKILL);
    lab.wait_exit(gw, Duration::from_secs(10));
    refused("sluice killed");
    // A new run cleans up after the dead one and carries traffic again.
    s.start_edge();
    s.start_gateway();
    let (seen, _, _) = fetch(&lab, &plain);
    assert_eq!(seen, edge, "after the restart: tunnelled\n{}", logs(&lab));

    // Stopping keeps the host failing closed; only the operator's
    // `sluice gateway detach` removes the routing, and then the host
    // reaches the server directly.
    let status = lab.stop(s.gateway.take().unwrap());
    assert!(status.success(), "stop: {status}\n{}", logs(&lab));
    refused("sluice stopped");
    let out = s.gateway_command(&["detach"]);
    assert!(out.status.success(), "detach: {out:?}");
    let rules = lab.run_ok(Host::Gw, &["ip", "rule", "show"]);
    assert!(
        !rules.contains("lookup 1473"),
        "rules left behind:\n{rules}"
    );
    let links = lab.run_ok(Host::Gw, &["ip", "-o", "link", "show"]);
    assert!(
        !links.contains("sluice-ep"),
        "endpoint device left behind:\n{links}"
    );
    let (seen, gw_syn, _) = fetch(&lab, &plain);
    assert_eq!(
        (seen.as_str(), gw_syn),
        (direct.as_str(), 1),
        "after detach: direct"
    );
}

/// A lab with endpoint mode on (TUN path), `listed` bypassing, the edge
/// and the gateway running.
fn endpoint_lab<'a>(lab: &'a Lab, listed: &[String]) -> Sluice<'a> {
    lab.spawn_peer(Host::Inet, "peer", HTTP, super::UDP);
    let mut s = Sluice::prepare(lab, bin(), |t| with_endpoint(t, listed));
    s.edit_edge(edge_with_endpoint);
    s.start_edge();
    s.start_gateway();
    s
}

#[test]
fn endpoint_a_failed_exec_of_a_listed_program_grants_nothing_to_an_unseen_exec() {
    if !require_root("endpoint_a_failed_exec_of_a_listed_program_grants_nothing_to_an_unseen_exec")
    {
        return;
    }
    let lab = Lab::new();
    let curl_bin = which("curl");
    let listed = lab.dir().join("apps/bin/fetch-listed");
    install(&curl_bin, &listed);
    let s = endpoint_lab(&lab, &[listed.to_string_lossy().into_owned()]);
    let (edge, direct) = (addr::EDGE_WAN_V4.to_string(), addr::GW_WAN_V4.to_string());
    let (seen, _, _) = fetch(&lab, &listed);
    assert_eq!(seen, direct, "the listed program bypasses\n{}", logs(&lab));
    // The process execs the listed program, which fails after the kernel
    // opened it (an argument longer than the kernel takes: E2BIG): sluice
    // granted that exec. Milliseconds later the same process executes a
    // file sluice never sees (a copy of curl in a memfd, `fexecve`): it
    // must not inherit the grant.
    let script = format!(
        "import os\n\
         try:\n    os.execv({listed:?}, ['x' * 200000])\nexcept OSError:\n    pass\n\
         fd = os.memfd_create('unseen', 0)\n\
         data = memoryview(open({curl_bin:?}, 'rb').read())\n\
         while data:\n    data = data[os.write(fd, data):]\n\
         os.execve(fd, ['curl', '-sS', '--fail', '--max-time', '10', {url:?}], dict(os.environ))\n",
        listed = listed.to_string_lossy(),
        url = url(addr::TUNNELLED_V4, "/whoami"),
    );
    lab.reset_counters();
    let out = lab.run(Host::Gw, &[sluice_lab::python(), "-c", &script]);
    assert!(
        out.status.success(),
        "the unseen program failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&lab)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        edge,
        "an exec sluice did not see inherited a failed exec's bypass\n{}",
        logs(&lab)
    );
    assert_eq!(lab.nft_counter(counter::GW_SYN_TO_TUNNELLED_V4), 0);
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
    let granted = format!("({}) bypasses", listed.display());
    assert!(
        lab.log("gateway").contains(&granted),
        "sluice never granted the failed exec: the test did not test\n{}",
        logs(&lab)
    );
    drop(s);
}

#[test]
fn endpoint_hooks_outlive_a_crash_so_no_marked_socket_goes_direct() {
    if !require_root("endpoint_hooks_outlive_a_crash_so_no_marked_socket_goes_direct") {
        return;
    }
    let lab = Lab::new();
    let mut s = endpoint_lab(&lab, &[]);
    let (ready, go) = (lab.dir().join("ready"), lab.dir().join("go"));
    // A UDP socket connected to a bypassed server carries the bypass mark;
    // after sluice dies, the program connects it to a tunnelled server
    // and sends (connected, and unconnected to that server).
    let script = format!(
        "import os, socket, time\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(({bypassed:?}, {udp}))\n\
         s.send(b'x')\n\
         open({ready:?}, 'w').close()\n\
         while not os.path.exists({go:?}):\n    time.sleep(0.05)\n\
         sent = 0\n\
         for i in range(20):\n\
         \x20   for f in (lambda: s.connect(({tunnelled:?}, {udp})), lambda: s.send(b'y'), lambda: s.sendto(b'z', ({tunnelled:?}, {udp}))):\n\
         \x20       try:\n\
         \x20           f(); sent += 1\n\
         \x20       except OSError:\n\
         \x20           pass\n\
         \x20   time.sleep(0.05)\n\
         print('calls that succeeded:', sent)\n",
        bypassed = addr::BYPASSED_V4.to_string(),
        tunnelled = addr::TUNNELLED_V4.to_string(),
        udp = super::UDP,
        ready = ready.to_string_lossy(),
        go = go.to_string_lossy(),
    );
    let prog = lab.spawn(Host::Gw, "marked", &[sluice_lab::python(), "-c", &script]);
    lab.wait_for("the marked socket", Duration::from_secs(10), || {
        ready.exists()
    });
    let gw = s.gateway.take().expect("gateway");
    lab.signal(gw, SIGKILL);
    lab.wait_exit(gw, Duration::from_secs(10));
    lab.reset_counters();
    std::fs::write(&go, b"go").unwrap();
    lab.wait_exit(prog, Duration::from_secs(20));
    assert_eq!(
        lab.nft_counter(counter::GW_TO_TUNNELLED_V4),
        0,
        "a socket marked before the crash sent to a tunnelled server directly\n{}\n{}",
        lab.log("marked"),
        logs(&lab)
    );
    // A restart replaces the dead run's pinned hooks; a stop unpins them
    // (the routing fails closed without the mark rule) and keeps refusing;
    // detach removes the routing.
    s.start_gateway();
    let pins = std::fs::read_dir(format!(
        "{}/sluice/{}-endpoint",
        sluice_lab::LAB_BPFFS,
        std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/run/netns/{}", lab.ns(Host::Gw))).unwrap()
        )
    ))
    .map_or(0, Iterator::count);
    assert_eq!(pins, 9, "pinned hook links after the restart");
    let status = lab.stop(s.gateway.take().expect("gateway"));
    assert!(status.success(), "stop: {status}\n{}", logs(&lab));
    let out = s.gateway_command(&["detach"]);
    assert!(out.status.success(), "detach: {out:?}");
    let rules = lab.run_ok(Host::Gw, &["ip", "rule", "show"]);
    assert!(
        !rules.contains("lookup 1473"),
        "rules left by detach:\n{rules}"
    );
}

/// Endpoint mode with `SLUICE_FAULT=<action>:sluice-exec` pulled: the
/// gateway must stop by itself, exit 70, leave the host failing closed,
/// and leave the host's execs running (a watcher that no longer answers
/// holds every exec on the host until its fanotify group goes).
fn exec_watcher_fault(action: &str) {
    let lab = Lab::new();
    lab.spawn_peer(Host::Inet, "peer", HTTP, super::UDP);
    let mut s = Sluice::prepare(&lab, bin(), |t| with_endpoint(t, &[]));
    s.edit_edge(edge_with_endpoint);
    s.start_edge();
    let trigger = lab.dir().join("fault-now");
    let fault = format!("{action}:sluice-exec");
    let trigger_s = trigger.to_string_lossy().into_owned();
    s.start_gateway_env(&[
        ("SLUICE_FAULT", &fault),
        ("SLUICE_FAULT_TRIGGER", &trigger_s),
    ]);
    std::fs::write(&trigger, b"now").unwrap();
    let gw = s.gateway.take().expect("gateway");
    let t0 = std::time::Instant::now();
    let status = lab.wait_exit(gw, Duration::from_secs(20));
    eprintln!(
        "endpoint: exec watcher {action}: the gateway exited ({status}) {:?} after the trigger",
        t0.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(70),
        "exec watcher {action}: exit status {status}\n{}",
        logs(&lab)
    );
    // Execs run again (a bounded command: the lab's default timeout).
    lab.run_ok(Host::Gw, &["true"]);
    // The host's own traffic to a tunnelled server is refused, not direct.
    lab.reset_counters();
    let out = lab.run(
        Host::Gw,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            &url(addr::TUNNELLED_V4, "/whoami"),
        ],
    );
    assert!(
        !out.status.success(),
        "exec watcher {action}: the host reached the tunnelled server"
    );
    assert_eq!(lab.nft_counter(counter::GW_TO_TUNNELLED_V4), 0);
}

#[test]
fn endpoint_an_exec_watcher_that_fails_stops_the_gateway_nonzero_failing_closed() {
    if require_root("endpoint_an_exec_watcher_that_fails_stops_the_gateway_nonzero_failing_closed")
    {
        exec_watcher_fault("exit");
    }
}

#[test]
fn endpoint_an_exec_watcher_that_hangs_stops_the_gateway_and_execs_resume() {
    if require_root("endpoint_an_exec_watcher_that_hangs_stops_the_gateway_and_execs_resume") {
        exec_watcher_fault("hang");
    }
}
