//! The `sluice` command line: `gateway`, `edge`, `controller`, `check`, `pki`, and the
//! running gateway's admin API (`policy`, `flows`) over its admin socket.
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sluice_config::{EdgeConfig, GatewayConfig};
use sluice_edge::Edge;
use sluice_gateway::gateway::Gateway;
use sluice_runtime::{metrics, pki};

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
        #[command(flatten)]
        enrol: EnrolArgs,
    },
    /// Run the edge: accept gateways' tunnels and forward their traffic.
    Edge {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/edge.toml")]
        config: PathBuf,
        #[command(flatten)]
        enrol: EnrolArgs,
    },
    /// Print this host's connections with their process and verdict
    /// (endpoint mode), from the running gateway's admin socket.
    Flows {
        /// Configuration file (for the admin socket).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// The running gateway's edges: per worker and tenant, the edge
    /// carrying the traffic and why, and each edge's state, RTT, probe
    /// misses and failures (from the admin socket).
    Status {
        /// Configuration file (for the admin socket).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// Check a configuration as start would (certificates, keys,
    /// revocation lists, interfaces, admin group and token), without
    /// changing anything.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// Which role's sections to check.
        #[arg(long, value_enum, default_value = "gateway")]
        role: Role,
        /// The file is for another machine: missing interfaces and groups
        /// are warnings, not errors.
        #[arg(long)]
        offline: bool,
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
    /// The management plane: run a controller (admin API, OAuth 2.0 API
    /// clients, audit log), import a gateway file, back up its store.
    Controller {
        /// The controller's configuration file.
        #[arg(short, long, default_value = sluice_controller::cli::DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: sluice_controller::cli::Command,
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

/// Enrolment with a controller instead of running.
#[derive(clap::Args)]
struct EnrolArgs {
    /// Enrol with the controller at this URL (https://HOST:PORT) and exit:
    /// a key is made here, the controller's CA signs its certificate.
    #[arg(long, value_name = "URL", requires = "token")]
    enrol: Option<String>,
    /// The one-time enrolment token the controller's admin was given (it
    /// pins the controller's CA). From the environment, it stays out of
    /// the process list.
    #[arg(
        long,
        requires = "enrol",
        env = "SLUICE_ENROL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Where the key (0600), the certificate, the CA and enrolment.json go.
    #[arg(long, default_value = "/var/lib/sluice/enrolment")]
    state_dir: PathBuf,
}

impl EnrolArgs {
    /// Enrols if asked: `Some(result)`; `None`: run as usual.
    fn run(&self) -> Option<anyhow::Result<()>> {
        let (url, token) = (self.enrol.as_ref()?, self.token.as_ref()?);
        Some(
            sluice_runtime::enrol::enrol(url, token, &self.state_dir)
                .map(|e| {
                    println!(
                        "enrolled as {} `{}` (id {}); key, certificate and CA in {}; agent {}",
                        e.kind,
                        e.name,
                        e.id,
                        self.state_dir.display(),
                        e.agent_url
                    );
                })
                .map_err(anyhow::Error::from),
        )
    }
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
        /// Ask the running gateway (its admin socket), with its live
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
        /// Configuration file (for the admin socket).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// The tenant's name.
        name: String,
    },
    /// The running gateway's policy state.
    Status {
        /// Configuration file (for the admin socket).
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// The addresses the running gateway's domain bypass holds (address,
    /// name, seconds left).
    Domains {
        /// Configuration file (for the admin socket).
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
    /// Generate a CA, an edge certificate, gateway certificates and an
    /// empty revocation list. The CA's key goes to `--ca-dir` (default
    /// `DIR/ca`, mode 0700), apart from the files that get deployed.
    Init {
        /// Output directory (created 0755; refused if others can write it
        /// or it is a symlink).
        #[arg(long)]
        dir: PathBuf,
        /// Where the CA's key (and a copy of its certificate) go; keep it
        /// off the gateways and the edge.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Names (DNS or IP) the edge certificate is valid for.
        #[arg(long = "edge-name", required = true)]
        edge_names: Vec<String>,
        /// Gateway names, one client certificate each (`NAME.pem`,
        /// `NAME.key` in `--dir`).
        #[arg(long = "gateway", required = true)]
        gateways: Vec<String>,
    },
    /// Revoke certificates: add them to the CA's revocation list (`crl`
    /// in `[edge]` and `[tunnel]`), signed with the CA's key. Restart the
    /// edge (or gateway) to apply it.
    Revoke {
        /// The directory `pki init` wrote.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's directory (default `DIR/ca`).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// The revocation list to extend (default `DIR/crl.pem`).
        #[arg(long)]
        crl: Option<PathBuf>,
        /// A gateway by name (`DIR/NAME.pem`).
        #[arg(long = "gateway")]
        gateways: Vec<String>,
        /// A certificate file.
        #[arg(long = "cert")]
        certs: Vec<PathBuf>,
    },
    /// A bearer token for the admin API's TCP listener: the token to
    /// `OUT` and its SHA-256 to `OUT.sha256` (`gateway.admin_token`), both
    /// 0600.
    AdminToken {
        /// Where the token goes.
        #[arg(long)]
        out: PathBuf,
    },
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    Ok(stop)
}

/// Sends `req` to the running gateway's admin socket (from the
/// configuration at `config`); the answer's text, or an error with the
/// gateway's reason.
fn admin(config: &std::path::Path, req: &sluice_gateway::admin::Request) -> anyhow::Result<String> {
    let cfg = GatewayConfig::load(config)?;
    let socket = cfg.admin.socket.with_context(|| {
        format!(
            "{}: gateway.admin_socket is off: the CLI reaches the running gateway there",
            config.display()
        )
    })?;
    // A reload of a large policy takes a while; the server closes at 60 s.
    let r = sluice_gateway::admin::call(&socket, req, std::time::Duration::from_secs(90))?;
    anyhow::ensure!(
        r.status == 200,
        "the gateway answered {} {}: {}",
        r.status,
        sluice_runtime::http::reason(r.status),
        r.body.trim()
    );
    Ok(r.body)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    abort_on_panic();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: error: {e:#}");
            if e.downcast_ref::<sluice_runtime::enrol::EnrolError>()
                .is_some_and(sluice_runtime::enrol::EnrolError::is_permanent)
            {
                return ExitCode::from(sluice_runtime::enrol::EXIT_REFUSED);
            }
            match e.downcast_ref::<sluice_gateway::gateway::GatewayError>() {
                Some(sluice_gateway::gateway::GatewayError::Fault(_)) => {
                    ExitCode::from(sluice_gateway::gateway::EXIT_FAULT)
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
    if !detach {
        sluice_gateway::gateway::agent::first_fetch(config)?;
    }
    let cfg = GatewayConfig::load(config)?;
    if detach {
        for line in sluice_gateway::gateway::detach(&cfg)? {
            println!("{line}");
        }
        return Ok(());
    }
    let stop = stop_flag()?;
    // Measure the record layer's AEAD libraries once, up front (logged),
    // rather than during the first handshake.
    sluice_runtime::driver::aead();
    let gw = Gateway::start(&cfg, stop)?;
    gw.wait()?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Gateway { config, cmd, enrol } => {
            if let Some(r) = enrol.run() {
                return r;
            }
            gateway(&config, matches!(cmd, Some(GatewayCmd::Detach)))
        }
        Cmd::Edge { config, enrol } => {
            if let Some(r) = enrol.run() {
                return r;
            }
            sluice_edge::agent::first_fetch(&config)
                .map_err(|e| anyhow::anyhow!("controller: {e}"))?;
            let cfg = EdgeConfig::load(&config)?;
            let stop = stop_flag()?;
            let metrics_addr = cfg.metrics;
            sluice_runtime::driver::aead();
            let mut edge = Edge::new(cfg)?;
            // The controller's agent, if any: its stored allow-list is in
            // force before the first handshake. The thread is not joined at
            // a stop (a long poll may be in flight); a panic aborts.
            if let Some(agent) = edge.agent()? {
                let s = stop.clone();
                std::thread::Builder::new()
                    .name("sluice-agent".into())
                    .spawn(move || agent.run(&s))
                    .context("spawning the controller agent")?;
            }
            let _metrics = match metrics_addr {
                Some(addr) => {
                    let stats = edge.stats();
                    Some(
                        metrics::serve(addr, stop.clone(), move |out| {
                            sluice_edge::render_stats(&stats, out);
                        })
                        .with_context(|| format!("serving metrics on {addr}"))?,
                    )
                }
                None => None,
            };
            edge.run(&stop)?;
            log::info!("edge stopped");
            Ok(())
        }
        Cmd::Status { config } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Edges)?
            );
            Ok(())
        }
        Cmd::Flows { config } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Flows)?
            );
            Ok(())
        }
        Cmd::Check {
            config,
            role,
            offline,
        } => check(&config, role, offline),
        Cmd::XdpNoop { iface, mode } => {
            let mode = match mode.as_str() {
                "auto" => sluice_gateway::ebpf::AttachMode::Auto,
                "native" => sluice_gateway::ebpf::AttachMode::Native,
                "generic" => sluice_gateway::ebpf::AttachMode::Generic,
                other => anyhow::bail!("unknown XDP mode `{other}` (auto, native, generic)"),
            };
            let stop = stop_flag()?;
            let _prog = sluice_gateway::ebpf::attach_noop(&iface, mode)?;
            println!("no-op XDP program attached to {iface}");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(())
        }
        Cmd::Policy { cmd } => policy_cmd(cmd),
        Cmd::Pki { cmd } => pki_cmd(cmd),
        Cmd::Controller { config, cmd } => sluice_controller::cli::main(&config, cmd),
    }
}

fn policy_cmd(cmd: PolicyCmd) -> anyhow::Result<()> {
    use sluice_core::policy::{eval, trusted::NetworkState};
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
            let proto: sluice_core::policy::Proto = proto.parse()?;
            if live {
                let req = sluice_gateway::admin::Request::Explain(sluice_gateway::admin::Explain {
                    src,
                    dst,
                    sport,
                    dport,
                    proto: proto.0,
                    process,
                    domain,
                    local,
                });
                print!("{}", admin(&config, &req)?);
                return Ok(());
            }
            let cfg = GatewayConfig::load(&config)?;
            let mut policy = cfg.policy;
            if let Some(t) = &tenant {
                policy.switch_tenant(t)?;
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
        // `admin` loads the file first: an invalid one is refused here,
        // with its line and field, before the gateway is asked.
        PolicyCmd::Reload { config } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Reload)?
            );
            Ok(())
        }
        PolicyCmd::Tenant { config, name } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Tenant { name })?
            );
            Ok(())
        }
        PolicyCmd::Status { config } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Status)?
            );
            Ok(())
        }
        PolicyCmd::Domains { config } => {
            print!(
                "{}",
                admin(&config, &sluice_gateway::admin::Request::Domains)?
            );
            Ok(())
        }
    }
}

/// `sluice check`: the file, then what start would load and look up.
fn check(config: &std::path::Path, role: Role, offline: bool) -> anyhow::Result<()> {
    use sluice_gateway::check::{self, Level};
    let (summary, findings) = match role {
        Role::Gateway => {
            let c = GatewayConfig::load(config)?;
            let summary = format!(
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
            (summary, check::gateway(&c, offline))
        }
        Role::Edge => {
            let c = EdgeConfig::load(config)?;
            let summary = format!(
                "{}: ok: edge `{}` on {}, TUN {}, gateways {}",
                config.display(),
                c.name,
                c.listen,
                c.tun,
                c.gateways
                    .iter()
                    .map(|g| format!("{} ({} prefixes)", g.name, g.prefixes.len()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (summary, check::edge(&c))
        }
    };
    let mut errors = 0;
    for f in &findings {
        match f.level {
            Level::Error => {
                errors += 1;
                eprintln!("sluice: error: {}: {f}", config.display());
            }
            Level::Warning => eprintln!("sluice: warning: {}: {f}", config.display()),
        }
    }
    anyhow::ensure!(
        errors == 0,
        "{}: {errors} error(s): start would fail or the tunnel would not come up",
        config.display()
    );
    println!("{summary}");
    Ok(())
}

fn pki_cmd(cmd: PkiCmd) -> anyhow::Result<()> {
    match cmd {
        PkiCmd::Init {
            dir,
            ca_dir,
            edge_names,
            gateways,
        } => {
            let ca_dir = ca_dir.unwrap_or_else(|| dir.join("ca"));
            let f = pki::generate_in(&dir, &ca_dir, &edge_names, &gateways)?;
            println!("CA: {} (deploy it)", f.ca.display());
            println!(
                "CA key: {} (keep it off the gateways and the edge: it signs certificates and revocation lists)",
                f.ca_key.display()
            );
            println!("revocation list: {} (empty)", f.crl.display());
            println!("edge: {} {}", f.edge.0.display(), f.edge.1.display());
            for (n, c, k) in f.gateways {
                println!("gateway {n}: {} {}", c.display(), k.display());
            }
            Ok(())
        }
        PkiCmd::Revoke {
            dir,
            ca_dir,
            crl,
            gateways,
            mut certs,
        } => {
            for g in &gateways {
                anyhow::ensure!(
                    !g.is_empty() && !g.contains(['/', '\0']) && g != ".." && g != ".",
                    "--gateway {g:?}: not a gateway name"
                );
                certs.push(dir.join(format!("{g}.pem")));
            }
            anyhow::ensure!(
                !certs.is_empty(),
                "name what to revoke: --gateway NAME or --cert FILE"
            );
            let ca_dir = ca_dir.unwrap_or_else(|| dir.join("ca"));
            let crl = crl.unwrap_or_else(|| dir.join("crl.pem"));
            let r = pki::revoke(&ca_dir, &crl, &certs)?;
            println!(
                "{}: revocation list number {}, {} certificate(s) revoked ({} added: {}); restart the edge (and gateways that load it) to apply it",
                crl.display(),
                r.number,
                r.serials.len(),
                r.added.len(),
                r.added.join(", ")
            );
            Ok(())
        }
        PkiCmd::AdminToken { out } => {
            let (token, hash) = pki::admin_token(&out)?;
            println!(
                "token: {} (give it to the admin API's clients: Authorization: Bearer <token>)",
                token.display()
            );
            println!(
                "hash: {} (point gateway.admin_token at it, with gateway.admin_listen)",
                hash.display()
            );
            Ok(())
        }
    }
}
