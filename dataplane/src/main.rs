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
    Gateway {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
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
    use std::io::{Read as _, Write as _};
    let timeout = std::time::Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to the gateway at {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Gateway { config } => {
            let cfg = GatewayConfig::load(&config)?;
            let stop = stop_flag()?;
            // Measure the record layer's AEAD libraries once, up front
            // (logged), rather than during the first handshake.
            sluice::tunnel::AeadProvider::calibrated();
            let gw = Gateway::start(&cfg, stop.clone())?;
            gw.wait()?;
            Ok(())
        }
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
                        "{}: ok: gateway `{}`, LAN {}, WAN {}, edge {}, {} bypass prefixes",
                        config.display(),
                        c.name,
                        c.lan.as_deref().unwrap_or("none (endpoint mode only)"),
                        c.wan,
                        c.tunnel.edge,
                        c.bypass.len()
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
