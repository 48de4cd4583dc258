//! Directory group sync: users and groups read from an LDAP directory
//! (LDAPS, or StartTLS on `ldap://`: never in the clear), with paged
//! results (RFC 2696) for directories of tens of thousands of entries and
//! Active Directory's ranged `member` attribute (`member;range=0-1499`,
//! then the next range, until `*`), every `interval_minutes` (default
//! 180) and on demand. Nested groups count: a user in a group in a group
//! is in both.
//!
//! A sync is one write (one revision, an audit entry per object changed):
//! the directory's groups and users become objects marked `source =
//! "directory"`; a directory group that is gone is deleted, unless an app
//! profile names it, in which case it stays, flagged `missing`, with no
//! members (its users fall to the next rule that matches them); a user
//! that is gone is deleted unless an identity names it (then it stays,
//! flagged, in no group). A failed sync changes nothing: the last good
//! groups stay, and the status says why. Directory entries are untrusted:
//! a name sluice cannot hold is skipped and counted, an entry that does
//! not parse is skipped, and a directory of more than `max_entries`
//! entries is refused as a whole.
//!
//! ```toml
//! [directory]
//! url = "ldaps://dc.example:636"            # or ldap://...:389 (StartTLS then)
//! ca = "directory-ca.pem"                   # the directory's CA (default: the system's)
//! bind_dn = "cn=sluice,ou=services,dc=example,dc=com"
//! bind_password_file = "directory.password" # 0600, one line
//! base_dn = "dc=example,dc=com"
//! # users_filter = "(objectClass=inetOrgPerson)"   # AD: (&(objectCategory=person)(objectClass=user))
//! # groups_filter = "(|(objectClass=groupOfNames)(objectClass=group))"
//! # user_attribute = "uid"                         # AD: sAMAccountName
//! # group_attribute = "cn"
//! # member_attribute = "member"
//! # interval_minutes = 180
//! # page_size = 500
//! ```
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// `[directory]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    url: String,
    ca: Option<PathBuf>,
    bind_dn: String,
    bind_password_file: PathBuf,
    base_dn: String,
    users_base: Option<String>,
    groups_base: Option<String>,
    users_filter: Option<String>,
    groups_filter: Option<String>,
    user_attribute: Option<String>,
    group_attribute: Option<String>,
    member_attribute: Option<String>,
    interval_minutes: Option<u64>,
    page_size: Option<i32>,
    timeout_secs: Option<u64>,
    max_entries: Option<usize>,
}

/// The directory to sync from.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// `ldaps://` or `ldap://` (StartTLS) URL.
    pub url: String,
    /// StartTLS (for `ldap://`).
    pub starttls: bool,
    /// The directory's CA (PEM); `None`: the system's.
    pub ca: Option<PathBuf>,
    /// Who binds.
    pub bind_dn: String,
    /// Its password's file.
    pub bind_password_file: PathBuf,
    /// Where users are.
    pub users_base: String,
    /// Where groups are.
    pub groups_base: String,
    /// Which entries are users.
    pub users_filter: String,
    /// Which entries are groups.
    pub groups_filter: String,
    /// A user's name attribute.
    pub user_attribute: String,
    /// A group's name attribute.
    pub group_attribute: String,
    /// A group's member attribute.
    pub member_attribute: String,
    /// How often.
    pub interval: Duration,
    /// Entries per page.
    pub page_size: i32,
    /// Per operation.
    pub timeout: Duration,
    /// Most entries (users and groups) a sync takes.
    pub max_entries: usize,
}

impl RawDirectory {
    /// Checks it (relative paths are relative to `base`).
    ///
    /// # Errors
    /// What is wrong.
    pub fn check(self, base: &Path) -> Result<DirectoryConfig, String> {
        let starttls = if self.url.starts_with("ldaps://") {
            false
        } else if self.url.starts_with("ldap://") {
            true
        } else {
            return Err(format!(
                "url `{}`: ldaps://HOST[:PORT] or ldap://HOST[:PORT] (StartTLS)",
                self.url
            ));
        };
        let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let interval = self.interval_minutes.unwrap_or(180);
        if !(5..=10_080).contains(&interval) {
            return Err("interval_minutes: 5 to 10080".into());
        }
        let page_size = self.page_size.unwrap_or(500);
        if !(1..=5000).contains(&page_size) {
            return Err("page_size: 1 to 5000".into());
        }
        let text = |v: &str, what: &str| -> Result<(), String> {
            if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
                Err(format!("{what}: 1 to 1024 bytes, no control characters"))
            } else {
                Ok(())
            }
        };
        text(&self.bind_dn, "bind_dn")?;
        text(&self.base_dn, "base_dn")?;
        let users_base = self.users_base.unwrap_or_else(|| self.base_dn.clone());
        let groups_base = self.groups_base.unwrap_or_else(|| self.base_dn.clone());
        let users_filter = self
            .users_filter
            .unwrap_or_else(|| "(objectClass=inetOrgPerson)".into());
        let groups_filter = self
            .groups_filter
            .unwrap_or_else(|| "(|(objectClass=groupOfNames)(objectClass=group))".into());
        for (v, w) in [
            (&users_base, "users_base"),
            (&groups_base, "groups_base"),
            (&users_filter, "users_filter"),
            (&groups_filter, "groups_filter"),
        ] {
            text(v, w)?;
        }
        Ok(DirectoryConfig {
            url: self.url,
            starttls,
            ca: self.ca.map(rel),
            bind_dn: self.bind_dn,
            bind_password_file: rel(self.bind_password_file),
            users_base,
            groups_base,
            users_filter,
            groups_filter,
            user_attribute: self.user_attribute.unwrap_or_else(|| "uid".into()),
            group_attribute: self.group_attribute.unwrap_or_else(|| "cn".into()),
            member_attribute: self.member_attribute.unwrap_or_else(|| "member".into()),
            interval: Duration::from_secs(interval * 60),
            page_size,
            timeout: Duration::from_secs(self.timeout_secs.unwrap_or(30).clamp(1, 600)),
            max_entries: self.max_entries.unwrap_or(200_000).clamp(1, 2_000_000),
        })
    }
}

/// What a directory holds, as sluice takes it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// Group names.
    pub groups: BTreeSet<String>,
    /// Users and their groups (direct and nested).
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Entries skipped: names sluice cannot hold, or entries that did not
    /// parse.
    pub skipped: usize,
}

/// A DN compared as the directory would (case and spaces around `,` and
/// `=` aside).
fn norm_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            rdn.split('=')
                .map(|p| p.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join("=")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An entry's DN and text attributes, without panicking on what the
/// server sent (`ldap3::SearchEntry::construct` panics on a malformed
/// entry: a directory is untrusted input).
fn entry(re: &ldap3::ResultEntry) -> Option<(String, HashMap<String, Vec<String>>)> {
    let mut tags = re.0.clone().match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(tags.next()?.expect_primitive()?).ok()?;
    let mut attrs: HashMap<String, Vec<String>> = HashMap::new();
    for a in tags.next()?.expect_constructed()? {
        let mut part = a.expect_constructed()?.into_iter();
        let name = String::from_utf8(part.next()?.expect_primitive()?).ok()?;
        let values = part.next()?.expect_constructed()?;
        let v = attrs.entry(name).or_default();
        for val in values {
            if let Some(s) = val
                .expect_primitive()
                .and_then(|b| String::from_utf8(b).ok())
            {
                v.push(s);
            }
        }
    }
    Some((dn, attrs))
}

/// The values of attribute `name` (any case), and the next range to ask
/// for if the server sent a ranged one (`member;range=0-1499`: more from
/// 1500; `member;range=1500-*`: the last).
fn values_and_next(attrs: &HashMap<String, Vec<String>>, name: &str) -> (Vec<String>, Option<u64>) {
    let mut out = Vec::new();
    let mut next = None;
    for (k, v) in attrs {
        let lower = k.to_ascii_lowercase();
        if lower == name.to_ascii_lowercase() {
            out.extend(v.iter().cloned());
        } else if let Some(range) = lower
            .strip_prefix(&name.to_ascii_lowercase())
            .and_then(|r| r.strip_prefix(";range="))
        {
            out.extend(v.iter().cloned());
            if let Some((_, end)) = range.split_once('-')
                && end != "*"
                && let Some(n) = end.parse::<u64>().ok().and_then(|e| e.checked_add(1))
            {
                next = Some(n);
            }
        }
    }
    (out, next)
}

fn first(attrs: &HashMap<String, Vec<String>>, name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
}

fn tls_config(cfg: &DirectoryConfig) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    use rustls_pki_types::{CertificateDer, pem::PemObject as _};
    let Some(ca) = &cfg.ca else {
        return Ok(None);
    };
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", ca.display()));
    }
    let c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(Arc::new(c)))
}

fn read_password(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{}: readable by others: make it 0600 (chmod 600)",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let pw = text.lines().next().unwrap_or("").to_string();
    // An empty password is an unauthenticated bind (RFC 4513 5.1.2): some
    // servers let it "succeed" and then show nothing.
    if pw.is_empty() {
        return Err(format!("{}: the password is empty", path.display()));
    }
    Ok(pw)
}

/// Reads the directory.
///
/// # Errors
/// Connection, TLS, bind, search, or a directory over `max_entries`.
pub async fn fetch(cfg: &DirectoryConfig) -> Result<Directory, String> {
    use ldap3::{
        LdapConnAsync, LdapConnSettings, Scope,
        adapters::{Adapter, EntriesOnly, PagedResults},
    };
    let password = read_password(&cfg.bind_password_file)?;
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(cfg.timeout)
        .set_starttls(cfg.starttls);
    if let Some(tls) = tls_config(cfg)? {
        settings = settings.set_config(tls);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
        .await
        .map_err(|e| format!("connecting to {}: {e}", cfg.url))?;
    ldap3::drive!(conn);
    ldap.with_timeout(cfg.timeout)
        .simple_bind(&cfg.bind_dn, &password)
        .await
        .and_then(ldap3::LdapResult::success)
        .map_err(|e| format!("binding as {}: {e}", cfg.bind_dn))?;
    let mut seen = 0usize;
    let mut skipped = 0usize;
    let mut values = 0usize;
    let max_values = cfg.max_entries.saturating_mul(20);
    // Users: DN -> name.
    let mut users: HashMap<String, String> = HashMap::new();
    {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(cfg.page_size)),
        ];
        let mut s = ldap
            .with_timeout(cfg.timeout)
            .streaming_search_with(
                adapters,
                &cfg.users_base,
                Scope::Subtree,
                &cfg.users_filter,
                vec![cfg.user_attribute.as_str()],
            )
            .await
            .map_err(|e| format!("searching users: {e}"))?;
        while let Some(re) = s
            .next()
            .await
            .map_err(|e| format!("searching users: {e}"))?
        {
            seen += 1;
            if seen > cfg.max_entries {
                return Err(format!("more than {} entries", cfg.max_entries));
            }
            match entry(&re).and_then(|(dn, a)| Some((dn, first(&a, &cfg.user_attribute)?))) {
                Some((dn, name)) if crate::model::check_name("name", &name).is_ok() => {
                    users.insert(norm_dn(&dn), name);
                }
                _ => skipped += 1,
            }
        }
        s.finish()
            .await
            .success()
            .map_err(|e| format!("searching users: {e}"))?;
    }
    // Groups: DN -> (name, member DNs).
    let mut groups: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut ranged: Vec<(String, u64)> = Vec::new();
    {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(cfg.page_size)),
        ];
        let mut s = ldap
            .with_timeout(cfg.timeout)
            .streaming_search_with(
                adapters,
                &cfg.groups_base,
                Scope::Subtree,
                &cfg.groups_filter,
                vec![cfg.group_attribute.as_str(), cfg.member_attribute.as_str()],
            )
            .await
            .map_err(|e| format!("searching groups: {e}"))?;
        while let Some(re) = s
            .next()
            .await
            .map_err(|e| format!("searching groups: {e}"))?
        {
            seen += 1;
            if seen > cfg.max_entries {
                return Err(format!("more than {} entries", cfg.max_entries));
            }
            let Some((dn, attrs)) = entry(&re) else {
                skipped += 1;
                continue;
            };
            let Some(name) = first(&attrs, &cfg.group_attribute)
                .filter(|n| crate::model::check_name("name", n).is_ok())
            else {
                skipped += 1;
                continue;
            };
            let (members, next) = values_and_next(&attrs, &cfg.member_attribute);
            values += members.len();
            if values > max_values {
                return Err(format!("more than {max_values} member values"));
            }
            let key = norm_dn(&dn);
            if let Some(n) = next {
                ranged.push((dn.clone(), n));
            }
            groups.insert(key, (name, members));
        }
        s.finish()
            .await
            .success()
            .map_err(|e| format!("searching groups: {e}"))?;
    }
    // Active Directory's ranged member values: ask for the next range of
    // each group until the server says `*` (bounded by max_entries).
    for (dn, mut from) in ranged {
        loop {
            let attr = format!("{};range={from}-*", cfg.member_attribute);
            let (rs, _) = ldap
                .with_timeout(cfg.timeout)
                .search(&dn, Scope::Base, "(objectClass=*)", vec![attr.as_str()])
                .await
                .and_then(ldap3::SearchResult::success)
                .map_err(|e| format!("reading the members of {dn}: {e}"))?;
            // A range that cannot be read fails the sync: members must
            // not quietly fall out of their groups (review h32).
            let Some((_, attrs)) = rs.first().and_then(entry) else {
                return Err(format!(
                    "the members of {dn} from {from} on could not be read"
                ));
            };
            let (more, next) = values_and_next(&attrs, &cfg.member_attribute);
            if more.is_empty() {
                return Err(format!(
                    "the members of {dn} from {from} on: an empty range"
                ));
            }
            values += more.len();
            if values > max_values {
                return Err(format!("more than {max_values} member values"));
            }
            if let Some(g) = groups.get_mut(&norm_dn(&dn)) {
                g.1.extend(more);
            }
            match next {
                Some(n) if n > from => from = n,
                _ => break,
            }
        }
    }
    let _ = ldap.unbind().await;
    resolve(&users, &groups, skipped, max_values)
}

/// Most groups one user may be in (a user object's list bound).
pub const MAX_GROUPS_PER_USER: usize = 4096;

/// Users with their groups, nested groups followed (a user in group A,
/// which is a member of group B, is in both; cycles are harmless). Each
/// group's ancestors are computed once; the memberships made are counted
/// against `budget` (a hostile or pathological nesting fails the sync, it
/// does not exhaust memory). Two groups (or users) of one name in
/// different places are both skipped: which one is meant cannot be told.
fn resolve(
    users: &HashMap<String, String>,
    groups: &HashMap<String, (String, Vec<String>)>,
    skipped: usize,
    budget: usize,
) -> Result<Directory, String> {
    use std::collections::HashSet;
    let mut out = Directory {
        skipped,
        ..Directory::default()
    };
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (name, _) in groups.values() {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let mut ucount: HashMap<&str, usize> = HashMap::new();
    for name in users.values() {
        *ucount.entry(name.as_str()).or_default() += 1;
    }
    out.skipped += count
        .values()
        .filter(|n| **n > 1)
        .map(|n| *n)
        .sum::<usize>();
    out.skipped += ucount
        .values()
        .filter(|n| **n > 1)
        .map(|n| *n)
        .sum::<usize>();
    // Indexes: group DN -> i.
    let dns: Vec<&String> = groups.keys().collect();
    let index: HashMap<&str, usize> = dns
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    // parents[i]: the groups that list group i as a member.
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); dns.len()];
    for (gi, gdn) in dns.iter().enumerate() {
        for m in &groups[*gdn].1 {
            if let Some(&mi) = index.get(norm_dn(m).as_str()) {
                parents[mi].push(gi);
            }
        }
    }
    let mut spent = 0usize;
    for (gi, gdn) in dns.iter().enumerate() {
        let (name, members) = &groups[*gdn];
        if count[name.as_str()] > 1 {
            continue;
        }
        out.groups.insert(name.clone());
        // This group and its ancestors (a walk over the parents).
        let mut seen: HashSet<usize> = HashSet::from([gi]);
        let mut stack = vec![gi];
        while let Some(g) = stack.pop() {
            for &p in &parents[g] {
                if seen.insert(p) {
                    stack.push(p);
                    spent += 1;
                    if spent > budget {
                        return Err(format!(
                            "group nesting too deep or too wide (more than {budget} steps)"
                        ));
                    }
                }
            }
        }
        let names: Vec<&String> = seen
            .iter()
            .map(|i| &groups[dns[*i]].0)
            .filter(|n| count[n.as_str()] == 1)
            .collect();
        for m in members {
            let Some(user) = users.get(&norm_dn(m)) else {
                continue;
            };
            if ucount[user.as_str()] > 1 {
                continue;
            }
            let set = out.users.entry(user.clone()).or_default();
            for n in &names {
                if set.insert((*n).clone()) {
                    spent += 1;
                }
            }
            if set.len() > MAX_GROUPS_PER_USER {
                return Err(format!(
                    "user {user} would be in more than {MAX_GROUPS_PER_USER} groups"
                ));
            }
            if spent > budget {
                return Err(format!("more than {budget} memberships"));
            }
        }
    }
    for name in users.values() {
        if ucount[name.as_str()] == 1 {
            out.users.entry(name.clone()).or_default();
        }
    }
    Ok(out)
}

/// The last sync, as the API and the portal show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncStatus {
    /// Whether a directory is configured.
    pub configured: bool,
    /// When the last sync started (RFC 3339).
    pub last_started: Option<String>,
    /// When it ended.
    pub last_finished: Option<String>,
    /// Whether it worked.
    pub last_ok: Option<bool>,
    /// What it did, or why it failed.
    pub last_result: Option<String>,
    /// Groups and users after it.
    pub groups: i64,
    /// Users after it.
    pub users: i64,
    /// When the next one is due.
    pub next_sync: Option<String>,
    /// A sync was asked for and has not started yet.
    pub requested: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranged_members_and_nested_groups() {
        let mut a = HashMap::new();
        a.insert(
            "member;range=0-1499".to_string(),
            vec!["CN=a,DC=x".to_string()],
        );
        let (v, next) = values_and_next(&a, "member");
        assert_eq!((v.len(), next), (1, Some(1500)));
        let mut a = HashMap::new();
        a.insert("Member;range=1500-*".to_string(), vec!["x".to_string()]);
        assert_eq!(values_and_next(&a, "member").1, None);
        let mut a = HashMap::new();
        a.insert("member".to_string(), vec!["x".to_string(), "y".to_string()]);
        assert_eq!(
            values_and_next(&a, "member"),
            (vec!["x".into(), "y".into()], None)
        );

        let users: HashMap<String, String> = [
            ("uid=ann,ou=people,dc=x".to_string(), "ann".to_string()),
            ("uid=bob,ou=people,dc=x".to_string(), "bob".to_string()),
        ]
        .into_iter()
        .collect();
        let groups: HashMap<String, (String, Vec<String>)> = [
            (
                "cn=eng,ou=groups,dc=x".to_string(),
                (
                    "eng".to_string(),
                    vec!["UID=ann, OU=People, DC=x".to_string()],
                ),
            ),
            (
                "cn=staff,ou=groups,dc=x".to_string(),
                (
                    "staff".to_string(),
                    vec![
                        "cn=eng,ou=groups,dc=x".to_string(),
                        "cn=staff,ou=groups,dc=x".to_string(),
                    ],
                ),
            ),
        ]
        .into_iter()
        .collect();
        let d = resolve(&users, &groups, 0, 1000).unwrap();
        assert_eq!(
            d.users["ann"],
            ["eng", "staff"].into_iter().map(String::from).collect()
        );
        assert!(d.users["bob"].is_empty());
        assert_eq!(d.groups.len(), 2);
    }

    #[test]
    fn only_encrypted_urls_and_sane_bounds() {
        let raw = |url: &str| RawDirectory {
            url: url.into(),
            ca: None,
            bind_dn: "cn=x".into(),
            bind_password_file: "p".into(),
            base_dn: "dc=x".into(),
            users_base: None,
            groups_base: None,
            users_filter: None,
            groups_filter: None,
            user_attribute: None,
            group_attribute: None,
            member_attribute: None,
            interval_minutes: None,
            page_size: None,
            timeout_secs: None,
            max_entries: None,
        };
        assert!(!raw("ldaps://d:636").check(Path::new("/")).unwrap().starttls);
        assert!(raw("ldap://d:389").check(Path::new("/")).unwrap().starttls);
        assert!(raw("http://d").check(Path::new("/")).is_err());
        let d = raw("ldaps://d").check(Path::new("/etc")).unwrap();
        assert_eq!(d.interval, Duration::from_secs(180 * 60));
        assert_eq!(d.bind_password_file, Path::new("/etc/p"));
    }
}

/// The sync's status.
///
/// # Errors
/// The store.
pub async fn status(
    store: &crate::store::Store,
    configured: bool,
) -> Result<SyncStatus, crate::db::DbError> {
    use crate::db::Ctx as _;
    use sqlx::Row as _;
    let r = sqlx::query(
        "SELECT last_started, last_finished, last_ok, last_result, groups_count, users_count, next_at, requested FROM directory_sync WHERE key = 'directory'",
    )
    .fetch_one(&store.db.pool)
    .await
    .ctx("read the sync status")?;
    let t = |v: Option<i64>| v.map(crate::rfc3339);
    Ok(SyncStatus {
        configured,
        last_started: t(r.get(0)),
        last_finished: t(r.get(1)),
        last_ok: r.get::<Option<i64>, _>(2).map(|v| v != 0),
        last_result: r.get(3),
        groups: r.get(4),
        users: r.get(5),
        next_sync: configured.then(|| crate::rfc3339(r.get::<i64, _>(6).max(crate::now()))),
        requested: r.get::<i64, _>(7) != 0,
    })
}

/// Asks for a sync now (the scheduler takes it within seconds); `force`
/// takes it even if it removes much (see
/// [`crate::store::Store::sync_directory`]).
///
/// # Errors
/// The store.
pub async fn request(store: &crate::store::Store, force: bool) -> Result<(), crate::db::DbError> {
    use crate::db::Ctx as _;
    sqlx::query("UPDATE directory_sync SET requested = $1 WHERE key = 'directory'")
        .bind(if force { 2i64 } else { 1 })
        .execute(&store.db.pool)
        .await
        .ctx("ask for a sync")?;
    Ok(())
}

/// How long a controller may hold the sync (then another may take it).
const LEASE_SECS: i64 = 900;
/// A failed sync is tried again this soon (or at the interval, if
/// shorter).
const RETRY_SECS: i64 = 600;

/// How a sync reads the directory: this program (`sluice controller`, or
/// `sluice-controller`) with `--config FILE directory-fetch`, in a child
/// process. The LDAP library panics on some malformed answers; in the
/// controller's process that would end the admin API and the agents' long
/// polls with it (its panics abort). In a child, a hostile or broken
/// directory fails one sync.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The program and its leading arguments.
    pub argv: Vec<String>,
    /// The controller's file (the child reads `[directory]` from it).
    pub config: PathBuf,
}

/// Most bytes a fetch may print.
const MAX_FETCH_OUTPUT: u64 = 1 << 30;

/// Reads the directory in a child process (see [`Fetcher`]), killed after
/// `limit`.
///
/// # Errors
/// Why it failed (the child's last words, or how it ended).
pub async fn fetch_isolated(f: &Fetcher, limit: Duration) -> Result<Directory, String> {
    use tokio::io::AsyncReadExt as _;
    let (prog, args) = f.argv.split_first().ok_or("no fetch program")?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .arg("--config")
        .arg(&f.config)
        .arg("directory-fetch")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {prog}: {e}"))?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut stdout = child
        .stdout
        .take()
        .ok_or("no stdout")?
        .take(MAX_FETCH_OUTPUT);
    let mut stderr = child.stderr.take().ok_or("no stderr")?.take(64 * 1024);
    let run = async {
        let (a, b) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        a.and(b).map_err(|e| e.to_string())?;
        child.wait().await.map_err(|e| e.to_string())
    };
    let status = tokio::time::timeout(limit, run)
        .await
        .map_err(|_| format!("reading the directory took longer than {limit:?}"))??;
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(500)
            .collect::<String>();
        return Err(match status.code() {
            Some(_) => last
                .trim_start_matches("sluice: error: ")
                .trim_start_matches("sluice-controller: error: ")
                .to_string(),
            None => format!(
                "the directory reader ended on a signal ({status}): the directory sent what it cannot parse"
            ),
        });
    }
    serde_json::from_slice(&out).map_err(|e| format!("the directory reader's output: {e}"))
}

/// Syncs once: reads the directory (in a child) and writes what changed.
///
/// # Errors
/// Why nothing changed.
pub async fn sync_once(
    store: &crate::store::Store,
    cfg: &DirectoryConfig,
    fetcher: &Fetcher,
    force: bool,
) -> Result<crate::store::SyncCounts, String> {
    let d = fetch_isolated(fetcher, Duration::from_secs(LEASE_SECS as u64 - 60)).await?;
    let origin = crate::store::Origin {
        actor: "directory".into(),
        address: cfg.url.clone(),
    };
    let mut counts = store
        .sync_directory(&origin, &d, force)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Refused(why) => why,
            e => format!("writing the sync: {e}"),
        })?;
    if d.skipped > 0 {
        counts.flagged.push(format!(
            "{} entries skipped (names sluice cannot hold, or held twice)",
            d.skipped
        ));
    }
    Ok(counts)
}

/// Runs syncs when due or asked for, for ever (one controller of a
/// shared store at a time).
pub async fn scheduler(store: crate::store::Store, cfg: DirectoryConfig, fetcher: Fetcher) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = crate::now();
        let requested: Option<i64> =
            sqlx::query_scalar("SELECT requested FROM directory_sync WHERE key = 'directory'")
                .fetch_optional(&store.db.pool)
                .await
                .ok()
                .flatten();
        let taken = sqlx::query(
            "UPDATE directory_sync SET lease_until = $1, requested = 0, last_started = $2 WHERE key = 'directory' AND lease_until < $2 AND (next_at <= $2 OR requested <> 0)",
        )
        .bind(now + LEASE_SECS)
        .bind(now)
        .execute(&store.db.pool)
        .await
        .map(|r| r.rows_affected() == 1);
        match taken {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                log::warn!("directory sync: the store: {e}");
                continue;
            }
        }
        let force = requested == Some(2);
        let interval = i64::try_from(cfg.interval.as_secs()).unwrap_or(i64::MAX);
        // During maintenance nothing may change: not even read.
        let r = match store.maintenance().await {
            Ok((true, why)) => Err(format!(
                "skipped: the controller is in maintenance ({})",
                why.unwrap_or_default()
            )),
            _ => sync_once(&store, &cfg, &fetcher, force).await,
        };
        let finished = crate::now();
        let (ok, text, next, counts) = match r {
            Ok(c) => {
                let mut text = format!(
                    "{} groups, {} users; {} added, {} changed, {} removed; revision {}",
                    c.groups, c.users, c.added, c.updated, c.removed, c.revision
                );
                if !c.flagged.is_empty() {
                    let shown: Vec<&String> = c.flagged.iter().take(20).collect();
                    text.push_str(&format!(
                        "; flagged: {}{}",
                        shown
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        if c.flagged.len() > 20 {
                            format!(" and {} more", c.flagged.len() - 20)
                        } else {
                            String::new()
                        }
                    ));
                }
                log::info!("directory sync: {text}");
                (true, text, finished + interval, Some((c.groups, c.users)))
            }
            Err(e) => {
                let text = format!("failed, the last good groups stay: {e}");
                log::warn!("directory sync: {text}");
                (false, text, finished + interval.min(RETRY_SECS), None)
            }
        };
        let text: String = text.chars().take(4000).collect();
        let q = match counts {
            Some((g, u)) => sqlx::query(
                "UPDATE directory_sync SET last_finished = $1, last_ok = $2, last_result = $3, next_at = $4, lease_until = 0, groups_count = $5, users_count = $6 WHERE key = 'directory'",
            )
            .bind(finished)
            .bind(i64::from(ok))
            .bind(text)
            .bind(next)
            .bind(i64::try_from(g).unwrap_or(i64::MAX))
            .bind(i64::try_from(u).unwrap_or(i64::MAX)),
            None => sqlx::query(
                "UPDATE directory_sync SET last_finished = $1, last_ok = $2, last_result = $3, next_at = $4, lease_until = 0 WHERE key = 'directory'",
            )
            .bind(finished)
            .bind(i64::from(ok))
            .bind(text)
            .bind(next),
        };
        if let Err(e) = q.execute(&store.db.pool).await {
            log::warn!("directory sync: recording the result: {e}");
        }
    }
}
