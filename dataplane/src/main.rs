//! The `sluice` command line: `gateway`, `edge`, `check`, `pki init`.
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice::{
    config::{EdgeConfig, GatewayConfig},
    edge::Edge,
    gateway::Gateway,
    metrics, pki,
};

/// sluice: `XDP/AF_XDP` forwarding dataplane with a TLS 1.3 tunnel to a
/// service edge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway: classify LAN traffic with XDP, tunnel it to the edge.
    ///
    /// A stop (SIGTERM, SIGINT) leaves the classifier attached and pinned,
    /// dropping what it would tunnel, until a gateway runs again: `sluice
    /// gateway detach` removes it. Exit status 0 after a stop on a signal,
    /// 70 after a stop on a fault (a thread died or hung), 1 on an error.
    Gateway {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: Option<GatewayCmd>,
    },
    /// Run the edge: accept gateways' tunnels and forward their traffic.
    Edge {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/edge.toml")]
        config: PathBuf,
    },
    /// Print this host's connections with their process and verdict
    /// (endpoint mode), from the gateway's metrics address.
    Flows {
        /// Configuration file (for the metrics address).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file without touching the system.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// Which role's sections to check.
        #[arg(long, value_enum, default_value = "gateway")]
        role: Role,
    },
    /// Benchmark baseline: attach a pass-everything XDP program to an
    /// interface until SIGTERM/SIGINT.
    #[command(hide = true)]
    XdpNoop {
        /// Interface.
        #[arg(long)]
        iface: String,
        /// auto, native or generic.
        #[arg(long, default_value = "native")]
        mode: String,
    },
    /// Certificates.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// The policy: explain a flow, reload, switch the private-access
    /// tenant, show the running state.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
}

#[derive(Subcommand)]
enum GatewayCmd {
    /// Remove what a stopped gateway leaves on purpose: the classifier's
    /// pinned link and XDP program on the LAN interface, endpoint mode's
    /// failing-closed routing. From then on the kernel routes everything
    /// plainly, must-tunnel traffic included. Refused while a gateway runs.
    Detach,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Print the identity, rule, profile, verdict and reason for a flow.
    /// Offline (from the file) unless `--live` asks the running gateway.
    Explain {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// Source address (a LAN client, or this host with `--local`).
        #[arg(long)]
        src: std::net::IpAddr,
        /// Destination address.
        #[arg(long)]
        dst: std::net::IpAddr,
        /// Source port.
        #[arg(long, default_value_t = 40000)]
        sport: u16,
        /// Destination port (0 for protocols without ports).
        #[arg(long, default_value_t = 443)]
        dport: u16,
        /// Protocol: tcp, udp, icmp, icmpv6, sctp or a number.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// The executable behind the flow (this host's flows).
        #[arg(long)]
        process: Option<String>,
        /// The name the destination was resolved from.
        #[arg(long)]
        domain: Option<String>,
        /// A flow of this host itself (the local identity).
        #[arg(long)]
        local: bool,
        /// Offline: the network state (on-trusted, off-trusted, vpn-trusted).
        #[arg(long, default_value = "off-trusted")]
        network: String,
        /// Offline: the private-access tenant switched on.
        #[arg(long)]
        tenant: Option<String>,
        /// Offline: a tunnel that is down, `NAME` or `NAME:SECONDS`.
        #[arg(long)]
        down: Vec<String>,
        /// Ask the running gateway (its metrics address), with its live
        /// tenant, network state and tunnels.
        #[arg(long)]
        live: bool,
    },
    /// Validate the file, then have the running gateway swap it in.
    Reload {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// Switch a private-access tenant on (the others off).
    Tenant {
        /// Configuration file (for the metrics address).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// The tenant's name.
        name: String,
    },
    /// The running gateway's policy state.
    Status {
        /// Configuration file (for the metrics address).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Gateway,
    Edge,
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Generate a lab CA, an edge certificate and gateway certificates.
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Names (DNS or IP) the edge certificate is valid for.
        #[arg(long = "edge-name", required = true)]
        edge_names: Vec<String>,
        /// Gateway names, one client certificate each.
        #[arg(long = "gateway", required = true)]
        gateways: Vec<String>,
    },
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    Ok(stop)
}

/// A plain HTTP/1.0 GET of `path` on `addr`; the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    http(addr, "GET", path)
}

/// The gateway's metrics address, from its configuration file.
fn metrics_addr(config: &std::path::Path) -> anyhow::Result<std::net::SocketAddr> {
    GatewayConfig::load(config)?
        .metrics
        .context("gateway.metrics is not set: the running gateway answers there")
}

/// A plain HTTP/1.0 request without a body; the answer's body, or an
/// error carrying it if the status is not 200.
fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let timeout = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the gateway at {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{}: {}",
        head.lines().next().unwrap_or(""),
        body.trim()
    );
    Ok(body.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    abort_on_panic();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            match e.downcast_ref::<sluice::gateway::GatewayError>() {
                Some(sluice::gateway::GatewayError::Fault(_)) => {
                    ExitCode::from(sluice::gateway::EXIT_FAULT)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// A panic in any thread ends the process at once, after the usual
/// message. The release profile compiles with `panic = "abort"` already;
/// this holds whatever the build (cargo compiles the binary the lab tests
/// run with unwinding), so that no thread can unwind, return, and leave
/// the process half alive.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// `sluice gateway` and `sluice gateway detach`.
fn gateway(config: &std::path::Path, detach: bool) -> anyhow::Result<()> {
    let cfg = GatewayConfig::load(config)?;
    if detach {
        for line in sluice::gateway::detach(&cfg)? {
            println!("{line}");
        }
        return Ok(());
    }
    let stop = stop_flag()?;
    // Measure the record layer's AEAD libraries once, up front (logged),
    // rather than during the first handshake.
    sluice::tunnel::AeadProvider::calibrated();
    let gw = Gateway::start(&cfg, stop)?;
    gw.wait()?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Gateway { config, cmd } => gateway(&config, matches!(cmd, Some(GatewayCmd::Detach))),
        Cmd::Edge { config } => {
            let cfg = EdgeConfig::load(&config)?;
            let stop = stop_flag()?;
            let metrics_addr = cfg.metrics;
            sluice::tunnel::AeadProvider::calibrated();
            let mut edge = Edge::new(cfg)?;
            let _metrics = match metrics_addr {
                Some(addr) => {
                    let stats = edge.stats();
                    Some(
                        metrics::serve(addr, stop.clone(), move |out| stats.render(out))
                            .with_context(|| format!("serving metrics on {addr}"))?,
                    )
                }
                None => None,
            };
            edge.run(&stop)?;
            log::info!("edge stopped");
            Ok(())
        }
        Cmd::Flows { config } => {
            let cfg = GatewayConfig::load(&config)?;
            let addr = cfg
                .metrics
                .context("gateway.metrics is not set: the flow table is served there")?;
            print!("{}", http_get(addr, "/flows")?);
            Ok(())
        }
        Cmd::Check { config, role } => {
            match role {
                Role::Gateway => {
                    let c = GatewayConfig::load(&config)?;
                    println!(
                        "{}: ok: gateway `{}`, LAN {}, WAN {}, edge {}; policy: profiles {}, rules {}, identities {}, private-access tenants {}",
                        config.display(),
                        c.name,
                        c.lan.as_deref().unwrap_or("none (endpoint mode only)"),
                        c.wan,
                        c.tunnel.edge,
                        c.policy.profiles.len(),
                        c.policy.rules.len(),
                        c.policy.identities.len(),
                        c.policy.tenants.len(),
                    );
                }
                Role::Edge => {
                    let c = EdgeConfig::load(&config)?;
                    println!(
                        "{}: ok: edge `{}` on {}, TUN {}, {} client prefixes",
                        config.display(),
                        c.name,
                        c.listen,
                        c.tun,
                        c.client_prefixes.len()
                    );
                }
            }
            Ok(())
        }
        Cmd::XdpNoop { iface, mode } => {
            let mode = match mode.as_str() {
                "auto" => sluice::ebpf::AttachMode::Auto,
                "native" => sluice::ebpf::AttachMode::Native,
                "generic" => sluice::ebpf::AttachMode::Generic,
                other => anyhow::bail!("unknown XDP mode `{other}` (auto, native, generic)"),
            };
            let stop = stop_flag()?;
            let _prog = sluice::ebpf::attach_noop(&iface, mode)?;
            println!("no-op XDP program attached to {iface}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(())
        }
        Cmd::Policy { cmd } => policy_cmd(cmd),
        Cmd::Pki {
            cmd:
                PkiCmd::Init {
                    dir,
                    edge_names,
                    gateways,
                },
        } => {
            let f = pki::generate(&dir, &edge_names, &gateways)?;
            println!("CA: {}", f.ca.display());
            println!("edge: {} {}", f.edge.0.display(), f.edge.1.display());
            for (n, c, k) in f.gateways {
                println!("gateway {n}: {} {}", c.display(), k.display());
            }
            Ok(())
        }
    }
}

fn policy_cmd(cmd: PolicyCmd) -> anyhow::Result<()> {
    use sluice::policy::{eval, trusted::NetworkState};
    match cmd {
        PolicyCmd::Explain {
            config,
            src,
            dst,
            sport,
            dport,
            proto,
            process,
            domain,
            local,
            network,
            tenant,
            down,
            live,
        } => {
            let proto: sluice::policy::Proto =
                proto.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if live {
                let mut q = format!(
                    "src={src}&dst={dst}&sport={sport}&dport={dport}&proto={}",
                    proto.0
                );
                if let Some(p) = &process {
                    q.push_str(&format!("&process={p}"));
                }
                if let Some(d) = &domain {
                    q.push_str(&format!("&domain={d}"));
                }
                if local {
                    q.push_str("&local=1");
                }
                print!(
                    "{}",
                    http_get(metrics_addr(&config)?, &format!("/policy/explain?{q}"))?
                );
                return Ok(());
            }
            let cfg = GatewayConfig::load(&config)?;
            let mut policy = cfg.policy;
            if let Some(t) = &tenant {
                policy.switch_tenant(t).map_err(|e| anyhow::anyhow!(e))?;
            }
            let network = NetworkState::ALL
                .into_iter()
                .find(|s| s.as_str() == network)
                .with_context(|| {
                    format!("--network {network}: expected on-trusted, off-trusted or vpn-trusted")
                })?;
            let mut rt = eval::Runtime {
                network,
                down: Vec::new(),
            };
            for d in &down {
                let (name, secs) = d.split_once(':').unwrap_or((d, "0"));
                let t = (0..=policy.tenants.len())
                    .filter_map(|t| u8::try_from(t).ok())
                    .find(|&t| policy.tenant_name(t) == name)
                    .with_context(|| format!("--down {d}: no tunnel `{name}`"))?;
                let secs: u64 = secs
                    .parse()
                    .with_context(|| format!("--down {d}: seconds"))?;
                rt.down.push((t, std::time::Duration::from_secs(secs)));
            }
            let flow = eval::Flow {
                src,
                dst,
                sport,
                dport,
                proto,
                process,
                domain,
                local,
            };
            print!("{}", eval::explain(&policy, &flow, &rt));
            Ok(())
        }
        PolicyCmd::Reload { config } => {
            // Refused here first, with the file's line and field.
            GatewayConfig::load(&config)?;
            print!(
                "{}",
                http(metrics_addr(&config)?, "POST", "/policy/reload")?
            );
            Ok(())
        }
        PolicyCmd::Tenant { config, name } => {
            print!(
                "{}",
                http(
                    metrics_addr(&config)?,
                    "POST",
                    &format!("/policy/tenant?name={name}")
                )?
            );
            Ok(())
        }
        PolicyCmd::Status { config } => {
            print!("{}", http_get(metrics_addr(&config)?, "/policy")?);
            Ok(())
        }
    }
}
