//! A private OpenLDAP `slapd` for one test: a config, a TLS certificate
//! from a throwaway CA, a directory seeded with `slapadd` (users,
//! groups, a nested group, an entry whose name sluice cannot hold), served
//! on loopback ports only (LDAP with StartTLS, and LDAPS); stopped and
//! removed on drop. The sync account is held to 500 entries a search and
//! unlimited paged results, so a sync only works if it pages.
use std::{
    fmt::Write as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const BASE: &str = "dc=example,dc=com";
pub const SYNC_DN: &str = "cn=sync,dc=example,dc=com";
pub const SYNC_PASSWORD: &str = "sync-password-1";
const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
const ROOT_PASSWORD: &str = "root-password-1";

pub struct Slapd {
    pub ldap_port: u16,
    pub ldaps_port: u16,
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// User `i`'s name.
pub fn user(i: usize) -> String {
    format!("user{i:05}")
}

/// Group `g`'s name.
pub fn group(g: usize) -> String {
    format!("group{g:04}")
}

/// The groups user `i` is directly in.
pub fn groups_of(i: usize, groups: usize) -> [usize; 2] {
    [i % groups, (i * 7 + 3) % groups]
}

impl Slapd {
    pub fn start(users: usize, groups: usize) -> Slapd {
        Self::start_in(users, groups, &[])
    }

    /// [`Slapd::start`], the server run under `wrap` (for example `ip
    /// netns exec NS`: it listens on that namespace's loopback).
    pub fn start_in(users: usize, groups: usize, wrap: &[&str]) -> Slapd {
        let dir = std::env::temp_dir().join(format!(
            "sluice-slapd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(dir.join("db")).unwrap();
        // TLS: a CA and a certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test directory CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {d}/slapd.pid\n\
             TLSCACertificateFile {d}/ca.pem\n\
             TLSCertificateFile {d}/server.pem\n\
             TLSCertificateKeyFile {d}/server.key\n\
             sizelimit 500\n\
             database mdb\n\
             maxsize 1073741824\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PASSWORD}\n\
             directory {d}/db\n\
             limits dn.exact=\"{SYNC_DN}\" size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited\n\
             access to attrs=userPassword by self read by anonymous auth by * none\n\
             access to * by * read\n",
            d = dir.display()
        );
        std::fs::write(dir.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: {SYNC_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: sync\nuserPassword: {SYNC_PASSWORD}\n\n"
        );
        for i in 0..users {
            let u = user(i);
            let _ = write!(
                ldif,
                "dn: uid={u},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: User {i}\nsn: {i}\n\n"
            );
        }
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        for i in 0..users {
            for g in groups_of(i, groups) {
                if !members[g].contains(&i) {
                    members[g].push(i);
                }
            }
        }
        for (g, m) in members.iter().enumerate() {
            let _ = write!(
                ldif,
                "dn: cn={},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {}\n",
                group(g),
                group(g)
            );
            if m.is_empty() {
                let _ = writeln!(ldif, "member: {SYNC_DN}");
            }
            for i in m {
                let _ = writeln!(ldif, "member: uid={},ou=people,{BASE}", user(*i));
            }
            ldif.push('\n');
        }
        // A group of groups, and a name sluice cannot hold.
        let _ = write!(
            ldif,
            "dn: cn=all-staff,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: all-staff\nmember: cn={},ou=groups,{BASE}\nmember: cn={},ou=groups,{BASE}\n\n\
             dn: cn=Domain Users,ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: Domain Users\nmember: uid={},ou=people,{BASE}\n\n",
            group(0),
            group(1),
            user(0)
        );
        std::fs::write(dir.join("seed.ldif"), ldif).unwrap();
        let out = Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(dir.join("seed.ldif"))
            .output()
            .expect("slapadd (Debian's slapd: run `cargo xtask setup`)");
        assert!(
            out.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (ldap_port, ldaps_port) = (free_port(), free_port());
        let mut cmd = match wrap {
            [] => Command::new("slapd"),
            [first, rest @ ..] => {
                let mut c = Command::new(first);
                c.args(rest).arg("slapd");
                c
            }
        };
        let child = cmd
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            .args(["-d", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd");
        let s = Slapd {
            ldap_port,
            ldaps_port,
            dir,
            ca_pem,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let up = || {
            if wrap.is_empty() {
                std::net::TcpStream::connect(("127.0.0.1", ldaps_port)).is_ok()
            } else {
                Command::new(wrap[0])
                    .args(&wrap[1..])
                    .args(["bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{ldaps_port}"))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
        };
        while !up() {
            assert!(Instant::now() < deadline, "slapd did not start in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// Applies `ldif` (changetype records) as the directory's root.
    pub fn modify(&self, ldif: &str) {
        let path = self.dir.join("change.ldif");
        std::fs::write(&path, ldif).unwrap();
        let out = Command::new("ldapmodify")
            .args(["-x", "-H"])
            .arg(format!("ldap://127.0.0.1:{}", self.ldap_port))
            .args(["-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `[directory]` section for this instance (`ldaps` or StartTLS),
    /// its password file written 0600 into `dir`.
    pub fn section(&self, ldaps: bool, dir: &std::path::Path) -> String {
        use std::os::unix::fs::OpenOptionsExt as _;
        let pw = dir.join("directory.password");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&pw)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{SYNC_PASSWORD}\n").as_bytes()).unwrap();
        let url = if ldaps {
            format!("ldaps://127.0.0.1:{}", self.ldaps_port)
        } else {
            format!("ldap://127.0.0.1:{}", self.ldap_port)
        };
        format!(
            "[directory]\nurl = \"{url}\"\nca = \"{}\"\nbind_dn = \"{SYNC_DN}\"\nbind_password_file = \"{}\"\nbase_dn = \"{BASE}\"\npage_size = 400\n",
            self.ca_pem.display(),
            pw.display()
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
