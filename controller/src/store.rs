//! The domain layer: reads, and the one write path.
//!
//! Every change goes through [`Store::write`], which in one transaction
//! takes the store's write lock (the audit sequence's row), refuses the
//! change during maintenance, checks the object's version against
//! `If-Match`, writes it, checks that the organisation's objects still make
//! a policy every gateway can load ([`crate::compile`]), bumps the policy
//! revision, and writes the audit entry with the object before and after.
//! Nothing else writes objects or the audit log. It knows nothing of HTTP:
//! handlers call it, and so do the command line and the tests.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use sqlx::{Any, Row as _, Transaction};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::{
    db::{Ctx as _, Db, DbError},
    model::{FieldError, Kind},
};

/// Who makes a change, and from where (the audit log's "who").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `client:<id>` (an API client), `admin:<name>`, `local:<user>` (the
    /// command line on the controller's host), `gateway:<id>`.
    pub actor: String,
    /// The peer address, or `local`.
    pub address: String,
}

impl Origin {
    /// The command line on this host.
    pub fn local() -> Origin {
        let user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "root".into());
        Origin {
            actor: format!("local:{user}"),
            address: "local".into(),
        }
    }
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Record {
    /// Identifier (never changes).
    pub id: String,
    /// Its version: the `ETag`; every change adds one.
    pub version: i64,
    /// When it was made (RFC 3339).
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// When it last changed (RFC 3339).
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    /// The policy revision of its last change.
    pub revision: i64,
    /// The object.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub body: Value,
}

/// Unix seconds, rendered as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::rfc3339(self.0))
    }
}

/// A change.
#[derive(Debug, Clone)]
pub enum Op {
    /// A new object (its body already checked by its kind).
    Create {
        /// Kind.
        kind: Kind,
        /// Body.
        body: Value,
    },
    /// A new body for an object.
    Replace {
        /// Kind.
        kind: Kind,
        /// Which.
        id: String,
        /// Body.
        body: Value,
        /// The version the caller saw (`If-Match`), if it said.
        if_match: Option<i64>,
    },
    /// Something done to an object that leaves its body as it is (an
    /// enrolment token made, a node enrolled, certificates revoked): the
    /// extras say what; the object is audited before and after.
    Action {
        /// Kind.
        kind: Kind,
        /// Which.
        id: String,
    },
    /// An object removed.
    Delete {
        /// Kind.
        kind: Kind,
        /// Which.
        id: String,
        /// The version the caller saw.
        if_match: Option<i64>,
    },
}

/// Writes that go with a change, in its transaction.
#[derive(Debug, Clone)]
pub enum Extra {
    /// An API client's new secret (its argon2id hash).
    AddSecret {
        /// Secret id.
        id: String,
        /// Hash (PHC string).
        hash: String,
        /// Expiry, Unix seconds.
        expires_at: i64,
    },
    /// One of its secrets removed.
    RemoveSecret {
        /// Secret id.
        id: String,
    },
    /// A one-time enrolment token for the object (its SHA-256).
    AddEnrolment {
        /// Hex SHA-256 of the token.
        token_hash: String,
        /// Unix seconds.
        expires_at: i64,
    },
    /// An enrolment token used: fails the write with
    /// [`StoreError::Enrolment`] unless it is the object's, unused and
    /// unexpired (at most one of two racing uses succeeds).
    UseEnrolment {
        /// Hex SHA-256 of the token.
        token_hash: String,
    },
    /// A certificate the CA issued to the object.
    AddCertificate {
        /// Hex SHA-256 of its DER.
        fingerprint: String,
        /// Hex serial.
        serial: String,
        /// The name on it.
        name: String,
        /// Unix seconds.
        not_after: i64,
    },
    /// Every certificate of the object revoked, and its unused enrolment
    /// tokens withdrawn.
    RevokeCertificates,
}

/// Why a change or a read did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("no {kind} `{id}`")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// Id asked for.
        id: String,
    },
    /// Another object of the kind has the name.
    #[error("a {kind} named `{name}` exists")]
    NameTaken {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// `If-Match` named an older version.
    #[error("the {kind} changed: version {current}, not {expected} (read it again, then retry)")]
    VersionMismatch {
        /// Kind.
        kind: &'static str,
        /// Sent.
        expected: i64,
        /// Stored.
        current: i64,
    },
    /// Read-only maintenance.
    #[error("the controller is in read-only maintenance: {0}")]
    Maintenance(String),
    /// An enrolment token that is unknown, used, expired or another
    /// object's.
    #[error("the enrolment token is unknown, used or expired")]
    Enrolment,
    /// A field is wrong.
    #[error("{0}")]
    Invalid(#[from] FieldError),
    /// The objects would not make a policy a gateway can load.
    #[error("the change would make an invalid policy: {0}")]
    Policy(String),
    /// A directory sync that would remove too much (see
    /// [`Store::sync_directory`]).
    #[error("{0}")]
    Refused(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What a write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object after (None after a delete).
    pub record: Option<Record>,
    /// The audit entry's sequence number.
    pub audit_seq: i64,
    /// The policy revision after.
    pub revision: i64,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Default page size.
pub const PAGE_DEFAULT: u32 = 50;
/// Largest page.
pub const PAGE_MAX: u32 = 5000;
/// A page also ends once its objects pass this many bytes (then `next`
/// continues it): a page of 5,000 large objects would be gigabytes.
pub const PAGE_BYTES: usize = 4 << 20;

/// A list's filters.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size (default 50, at most 5,000).
    pub limit: Option<u32>,
    /// After this name (the previous page's `next`).
    pub after: Option<String>,
    /// Exactly this name.
    pub name: Option<String>,
    /// Names containing this, case-insensitively.
    pub name_contains: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Sequence number (the log's order).
    pub seq: i64,
    /// When (RFC 3339).
    #[schema(value_type = String)]
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// From which address.
    pub address: String,
    /// `create`, `update`, `delete`, `add_secret`, `remove_secret`,
    /// `maintenance_on`, `maintenance_off`, ...
    pub action: String,
    /// The object's kind.
    pub kind: String,
    /// The object's id.
    pub object_id: String,
    /// The object's name.
    pub object_name: String,
    /// The object before (absent for a creation).
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// The object after (absent for a deletion).
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    /// The policy revision after the change.
    pub revision: i64,
    /// What else the change did: the secret added or removed, the
    /// certificate issued, the enrolment token's expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The audit log's filters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Page size.
    pub limit: Option<u32>,
    /// Entries before this sequence number (the previous page's `next`).
    pub before: Option<i64>,
    /// By actor.
    pub actor: Option<String>,
    /// By kind.
    pub kind: Option<String>,
    /// By object id.
    pub object_id: Option<String>,
    /// By action.
    pub action: Option<String>,
    /// At or after (Unix seconds).
    pub since: Option<i64>,
    /// Before (Unix seconds).
    pub until: Option<i64>,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    /// The database.
    pub db: Db,
    revision_tx: std::sync::Arc<watch::Sender<i64>>,
}

enum Bind {
    S(String),
    I(i64),
}

fn bind_all(
    mut q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments> {
    for b in binds {
        q = match b {
            Bind::S(s) => q.bind(s),
            Bind::I(i) => q.bind(i),
        };
    }
    q
}

/// Reads at most `limit` rows, and fewer once they pass [`PAGE_BYTES`]
/// (by `size`), streaming: never more than a page is held. Returns the
/// rows and whether more follow.
async fn fetch_bounded<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    pool: &sqlx::AnyPool,
    limit: i64,
    size: impl Fn(&sqlx::any::AnyRow) -> usize,
) -> Result<(Vec<sqlx::any::AnyRow>, bool), sqlx::Error> {
    use futures_util::TryStreamExt as _;
    let mut stream = q.fetch(pool);
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = stream.try_next().await? {
        if rows.len() as i64 >= limit || (!rows.is_empty() && bytes > PAGE_BYTES) {
            return Ok((rows, true));
        }
        bytes += size(&r);
        rows.push(r);
    }
    Ok((rows, false))
}

fn page_limit(limit: Option<u32>) -> Result<i64, FieldError> {
    match limit {
        None => Ok(i64::from(PAGE_DEFAULT)),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(i64::from(n)),
        Some(_) => Err(FieldError::new(
            "limit",
            format!("1 to {PAGE_MAX} (default {PAGE_DEFAULT})"),
        )),
    }
}

/// `LIKE` pattern for a substring, with `\` escaping the wildcards.
fn like_contains(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

const RECORD_COLUMNS: &str = "id, version, created_at, updated_at, revision, body";

fn record_of(row: &sqlx::any::AnyRow) -> Result<Record, DbError> {
    let body: String = row.get(5);
    let body = serde_json::from_str(&body).map_err(|e| DbError::Query {
        context: "decode a stored object".into(),
        source: sqlx::Error::Decode(Box::new(e)),
    })?;
    Ok(Record {
        id: row.get(0),
        version: row.get(1),
        created_at: Timestamp(row.get(2)),
        updated_at: Timestamp(row.get(3)),
        revision: row.get(4),
        body,
    })
}

/// A fresh identifier: the kind's prefix and 96 random bits.
pub fn new_id(prefix: &str) -> String {
    let b: [u8; 12] = rand::random();
    let mut s = String::with_capacity(prefix.len() + 25);
    s.push_str(prefix);
    s.push('_');
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl Store {
    /// A store over a migrated database.
    pub async fn new(db: Db) -> Result<Store, DbError> {
        let (tx, _) = watch::channel(0);
        let s = Store {
            db,
            revision_tx: std::sync::Arc::new(tx),
        };
        let r = s.revision().await?;
        s.revision_tx.send_replace(r);
        Ok(s)
    }

    /// The current policy revision.
    pub async fn revision(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revision'")
            .fetch_one(&self.db.pool)
            .await
            .ctx("read the revision")
    }

    /// Watches the policy revision (changes made through this controller
    /// at once; others' when [`Store::poll_revision`] sees them).
    pub fn watch_revision(&self) -> watch::Receiver<i64> {
        self.revision_tx.subscribe()
    }

    /// Reads the revision and tells the watchers if it moved (another
    /// controller on the same database changed something).
    pub async fn poll_revision(&self) -> Result<i64, DbError> {
        let r = self.revision().await?;
        self.revision_tx.send_if_modified(|cur| {
            if r > *cur {
                *cur = r;
                true
            } else {
                false
            }
        });
        Ok(r)
    }

    /// Whether the store is read-only, and why.
    pub async fn maintenance(&self) -> Result<(bool, Option<String>), DbError> {
        crate::db::maintenance(&self.db.pool).await
    }

    /// One object.
    pub async fn get(&self, kind: Kind, id: &str) -> Result<Record, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE kind = $1 AND id = $2"
        )))
        .bind(kind.as_str())
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
        .ctx("read an object")?;
        match row {
            Some(r) => Ok(record_of(&r)?),
            None => Err(StoreError::NotFound {
                kind: kind.as_str(),
                id: id.to_string(),
            }),
        }
    }

    /// One object by name.
    pub async fn get_by_name(&self, kind: Kind, name: &str) -> Result<Option<Record>, DbError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS} FROM objects WHERE kind = $1 AND name = $2"
        )))
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&self.db.pool)
        .await
        .ctx("read an object")?;
        row.map(|r| record_of(&r)).transpose()
    }

    /// A page of a kind's objects, by name.
    pub async fn list(&self, kind: Kind, q: &ListQuery) -> Result<Page<Record>, StoreError> {
        let limit = page_limit(q.limit)?;
        let mut sql = format!("SELECT {RECORD_COLUMNS}, name FROM objects WHERE kind = $1");
        let mut binds = vec![Bind::S(kind.as_str().into())];
        let mut n = 1;
        let mut add = |sql: &mut String, clause: &str, b: Bind| {
            n += 1;
            sql.push_str(&clause.replace("$N", &format!("${n}")));
            binds.push(b);
        };
        if let Some(a) = &q.after {
            add(&mut sql, " AND name > $N", Bind::S(a.clone()));
        }
        if let Some(a) = &q.name {
            add(&mut sql, " AND name = $N", Bind::S(a.clone()));
        }
        if let Some(a) = &q.name_contains {
            add(
                &mut sql,
                " AND LOWER(name) LIKE $N ESCAPE '\\'",
                Bind::S(like_contains(a)),
            );
        }
        add(&mut sql, " ORDER BY name LIMIT $N", Bind::I(limit + 1));
        let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds);
        let (rows, more) = fetch_bounded(q, &self.db.pool, limit, |r| r.get::<String, _>(5).len())
            .await
            .ctx("list objects")?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for r in &rows {
            items.push(record_of(r)?);
            last = Some(r.get::<String, _>(6));
        }
        let next = if more { last } else { None };
        Ok(Page { items, next })
    }

    /// The revision and every policy object as of it (one read
    /// transaction; repeatable reads on PostgreSQL).
    pub async fn snapshot(&self) -> Result<(i64, Vec<(Kind, Value)>), DbError> {
        let mut tx = self.db.pool.begin().await.ctx("begin a snapshot")?;
        if self.db.backend == crate::db::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut *tx)
                .await
                .ctx("isolate a snapshot")?;
        }
        let revision: i64 = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'revision'")
            .fetch_one(&mut *tx)
            .await
            .ctx("read the revision")?;
        let objects = load_policy_objects(&mut *tx).await?;
        tx.commit().await.ctx("end a snapshot")?;
        Ok((revision, objects))
    }

    /// Every object of every policy kind (for compiling).
    pub async fn policy_objects(&self) -> Result<Vec<(Kind, Value)>, DbError> {
        load_policy_objects(&self.db.pool).await
    }

    /// An API client's secrets: (id, hash, `expires_at`), unexpired first.
    pub async fn secrets(&self, client_id: &str) -> Result<Vec<(String, String, i64)>, DbError> {
        let rows = sqlx::query(
            "SELECT id, hash, expires_at FROM client_secrets WHERE client_id = $1 ORDER BY expires_at DESC",
        )
        .bind(client_id)
        .fetch_all(&self.db.pool)
        .await
        .ctx("read secrets")?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// A page of the audit log, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Page<AuditEntry>, StoreError> {
        let limit = page_limit(q.limit)?;
        let mut sql = String::from(
            "SELECT seq, at, actor, address, action, kind, object_id, object_name, before_json, after_json, revision, detail FROM audit WHERE 1 = 1",
        );
        let mut binds = Vec::new();
        let mut n = 0;
        let mut add = |sql: &mut String, clause: &str, b: Bind| {
            n += 1;
            sql.push_str(&clause.replace("$N", &format!("${n}")));
            binds.push(b);
        };
        if let Some(v) = q.before {
            add(&mut sql, " AND seq < $N", Bind::I(v));
        }
        for (col, v) in [
            ("actor", &q.actor),
            ("kind", &q.kind),
            ("object_id", &q.object_id),
            ("action", &q.action),
        ] {
            if let Some(v) = v {
                add(&mut sql, &format!(" AND {col} = $N"), Bind::S(v.clone()));
            }
        }
        if let Some(v) = q.since {
            add(&mut sql, " AND at >= $N", Bind::I(v));
        }
        if let Some(v) = q.until {
            add(&mut sql, " AND at < $N", Bind::I(v));
        }
        add(&mut sql, " ORDER BY seq DESC LIMIT $N", Bind::I(limit + 1));
        let q = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), binds);
        let (rows, more) = fetch_bounded(q, &self.db.pool, limit, |r| {
            r.get::<Option<String>, _>(8).map_or(0, |s| s.len())
                + r.get::<Option<String>, _>(9).map_or(0, |s| s.len())
        })
        .await
        .ctx("read the audit log")?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let items: Vec<AuditEntry> = rows
            .iter()
            .map(|r| AuditEntry {
                seq: r.get(0),
                at: Timestamp(r.get(1)),
                actor: r.get(2),
                address: r.get(3),
                action: r.get(4),
                kind: r.get(5),
                object_id: r.get(6),
                object_name: r.get(7),
                before: json(r.get(8)),
                after: json(r.get(9)),
                revision: r.get(10),
                detail: r.get(11),
            })
            .collect();
        let next = more
            .then(|| items.last().map(|e| e.seq.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    /// Switches read-only maintenance on or off (an audited write that
    /// maintenance itself does not refuse).
    pub async fn set_maintenance(
        &self,
        origin: &Origin,
        on: bool,
        reason: Option<&str>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let seq = bump(&mut tx, "audit_seq").await?;
        let before = crate::db::maintenance(&mut *tx).await?;
        crate::db::set_maintenance(&mut *tx, on, reason).await?;
        let revision = current(&mut tx, "revision").await?;
        let j = |(on, why): (bool, Option<String>)| serde_json::json!({"on": on, "reason": why});
        insert_audit(
            &mut tx,
            seq,
            origin,
            if on {
                "maintenance_on"
            } else {
                "maintenance_off"
            },
            "maintenance",
            "maintenance",
            "maintenance",
            Some(&j(before)),
            Some(&j((on, reason.map(str::to_string)))),
            revision,
            None,
        )
        .await?;
        tx.commit().await.ctx("commit maintenance")?;
        Ok(seq)
    }

    /// The one write path (see the module's documentation). `action` is the
    /// audit log's verb; `extras` are written in the same transaction;
    /// `bump_generation` adds one to an API client's `generation` (its live
    /// tokens stop working).
    pub async fn write(
        &self,
        origin: &Origin,
        action: &str,
        op: Op,
        extras: Vec<Extra>,
    ) -> Result<Written, StoreError> {
        let mut tx = self.db.begin_write().await?;
        // The audit sequence's row is the write lock (PostgreSQL: a row
        // lock every writer of every controller takes first).
        let seq = bump(&mut tx, "audit_seq").await?;
        let (on, why) = crate::db::maintenance(&mut *tx).await?;
        if on {
            return Err(StoreError::Maintenance(
                why.unwrap_or_else(|| "switched on by an administrator".into()),
            ));
        }
        let now = crate::now();
        let (kind, id, before, after_body) = match &op {
            Op::Create { kind, body } => (*kind, new_id(kind.id_prefix()), None, Some(body)),
            Op::Replace {
                kind,
                id,
                body,
                if_match,
            } => {
                let b = load(&mut tx, *kind, id).await?;
                check_version(*kind, &b, *if_match)?;
                (*kind, id.clone(), Some(b), Some(body))
            }
            Op::Delete { kind, id, if_match } => {
                let b = load(&mut tx, *kind, id).await?;
                check_version(*kind, &b, *if_match)?;
                (*kind, id.clone(), Some(b), None)
            }
            Op::Action { kind, id } => {
                let b = load(&mut tx, *kind, id).await?;
                (*kind, id.clone(), Some(b), None)
            }
        };
        let action_only = matches!(op, Op::Action { .. });
        let policy = kind.is_policy();
        let revision = if policy {
            bump(&mut tx, "revision").await?
        } else {
            current(&mut tx, "revision").await?
        };
        // An API client's generation moves on with every change, read and
        // written in this transaction: its live tokens stop working.
        let client_body;
        let after_body = if kind == Kind::ApiClient
            && let Some(body) = after_body
        {
            let mut b = body.clone();
            let g = before
                .as_ref()
                .and_then(|r| r.body.get("generation"))
                .and_then(Value::as_i64)
                .map_or(0, |g| g + 1);
            if let Value::Object(m) = &mut b {
                m.insert("generation".into(), Value::from(g));
            }
            client_body = b;
            Some(&client_body)
        } else {
            after_body
        };
        let name_of = |v: &Value| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let after = if action_only {
            before.clone()
        } else if let Some(body) = after_body {
            let name = name_of(body);
            let taken: Option<String> = sqlx::query_scalar(
                "SELECT id FROM objects WHERE kind = $1 AND name = $2 AND id <> $3",
            )
            .bind(kind.as_str())
            .bind(&name)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .ctx("check the name")?;
            if taken.is_some() {
                return Err(StoreError::NameTaken {
                    kind: kind.as_str(),
                    name,
                });
            }
            let text = serde_json::to_string(body).expect("JSON values serialise");
            let (version, created) = match &before {
                Some(b) => (b.version + 1, b.created_at.0),
                None => (1, now),
            };
            if before.is_some() {
                sqlx::query(
                    "UPDATE objects SET name = $1, version = $2, body = $3, updated_at = $4, revision = $5 WHERE kind = $6 AND id = $7",
                )
                .bind(&name)
                .bind(version)
                .bind(&text)
                .bind(now)
                .bind(revision)
                .bind(kind.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await
                .ctx("update an object")?;
            } else {
                sqlx::query(
                    "INSERT INTO objects (kind, id, name, version, body, created_at, updated_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(kind.as_str())
                .bind(&id)
                .bind(&name)
                .bind(version)
                .bind(&text)
                .bind(created)
                .bind(now)
                .bind(revision)
                .execute(&mut *tx)
                .await
                .ctx("insert an object")?;
            }
            Some(Record {
                id: id.clone(),
                version,
                created_at: Timestamp(created),
                updated_at: Timestamp(now),
                revision,
                body: body.clone(),
            })
        } else {
            sqlx::query("DELETE FROM objects WHERE kind = $1 AND id = $2")
                .bind(kind.as_str())
                .bind(&id)
                .execute(&mut *tx)
                .await
                .ctx("delete an object")?;
            if matches!(kind, Kind::Gateway | Kind::Edge) {
                revoke_all(&mut tx, kind, &id, now).await?;
            }
            if kind == Kind::ApiClient {
                sqlx::query("DELETE FROM client_secrets WHERE client_id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .ctx("delete the client's secrets")?;
            }
            None
        };
        for e in &extras {
            match e {
                Extra::AddSecret {
                    id: sid,
                    hash,
                    expires_at,
                } => {
                    sqlx::query(
                        "INSERT INTO client_secrets (id, client_id, hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(sid)
                    .bind(&id)
                    .bind(hash)
                    .bind(now)
                    .bind(*expires_at)
                    .execute(&mut *tx)
                    .await
                    .ctx("add a secret")?;
                }
                Extra::RemoveSecret { id: sid } => {
                    let n =
                        sqlx::query("DELETE FROM client_secrets WHERE id = $1 AND client_id = $2")
                            .bind(sid)
                            .bind(&id)
                            .execute(&mut *tx)
                            .await
                            .ctx("remove a secret")?
                            .rows_affected();
                    if n == 0 {
                        return Err(StoreError::NotFound {
                            kind: "secret",
                            id: sid.clone(),
                        });
                    }
                }
                Extra::AddEnrolment {
                    token_hash,
                    expires_at,
                } => {
                    sqlx::query(
                        "INSERT INTO enrolments (token_hash, kind, object_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(token_hash)
                    .bind(kind.as_str())
                    .bind(&id)
                    .bind(now)
                    .bind(*expires_at)
                    .execute(&mut *tx)
                    .await
                    .ctx("add an enrolment token")?;
                }
                Extra::UseEnrolment { token_hash } => {
                    let n = sqlx::query(
                        "UPDATE enrolments SET used_at = $1 WHERE token_hash = $2 AND kind = $3 AND object_id = $4 AND used_at IS NULL AND expires_at > $5",
                    )
                    .bind(now)
                    .bind(token_hash)
                    .bind(kind.as_str())
                    .bind(&id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .ctx("use an enrolment token")?
                    .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Enrolment);
                    }
                }
                Extra::AddCertificate {
                    fingerprint,
                    serial,
                    name,
                    not_after,
                } => {
                    sqlx::query(
                        "INSERT INTO certificates (fingerprint, serial, kind, object_id, name, issued_at, not_after) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(fingerprint)
                    .bind(serial)
                    .bind(kind.as_str())
                    .bind(&id)
                    .bind(name)
                    .bind(now)
                    .bind(*not_after)
                    .execute(&mut *tx)
                    .await
                    .ctx("record a certificate")?;
                }
                Extra::RevokeCertificates => revoke_all(&mut tx, kind, &id, now).await?,
            }
        }
        if policy && !action_only {
            let objects = load_policy_objects(&mut *tx).await?;
            crate::compile::check_org(&objects).map_err(StoreError::Policy)?;
        }
        let object_name = after
            .as_ref()
            .map(|r| name_of(&r.body))
            .or_else(|| before.as_ref().map(|r| name_of(&r.body)))
            .unwrap_or_default();
        let j = |r: &Record| serde_json::to_value(r).expect("records serialise");
        insert_audit(
            &mut tx,
            seq,
            origin,
            action,
            kind.as_str(),
            &id,
            &object_name,
            before.as_ref().map(j).as_ref(),
            after.as_ref().map(j).as_ref(),
            revision,
            detail_of(&extras).as_deref(),
        )
        .await?;
        tx.commit().await.ctx("commit a change")?;
        if policy {
            self.revision_tx.send_if_modified(|cur| {
                if revision > *cur {
                    *cur = revision;
                    true
                } else {
                    false
                }
            });
        }
        Ok(Written {
            record: after,
            audit_seq: seq,
            revision,
        })
    }
}

/// What a change's extras did, for its audit entry (never a secret or a
/// token: ids, fingerprints and times only).
fn detail_of(extras: &[Extra]) -> Option<String> {
    let parts: Vec<String> = extras
        .iter()
        .map(|e| match e {
            Extra::AddSecret { id, expires_at, .. } => {
                format!("secret {id} added, expires {}", crate::rfc3339(*expires_at))
            }
            Extra::RemoveSecret { id } => format!("secret {id} removed"),
            Extra::AddEnrolment { expires_at, .. } => {
                format!(
                    "enrolment token made, expires {}",
                    crate::rfc3339(*expires_at)
                )
            }
            Extra::UseEnrolment { .. } => "enrolment token used".into(),
            Extra::AddCertificate {
                fingerprint,
                serial,
                not_after,
                ..
            } => format!(
                "certificate issued: serial {serial}, SHA-256 {fingerprint}, until {}",
                crate::rfc3339(*not_after)
            ),
            Extra::RevokeCertificates => "certificates revoked, unused tokens withdrawn".into(),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

async fn revoke_all(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE certificates SET revoked_at = $1 WHERE kind = $2 AND object_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(kind.as_str())
    .bind(id)
    .execute(&mut **tx)
    .await
    .ctx("revoke certificates")?;
    sqlx::query("DELETE FROM enrolments WHERE kind = $1 AND object_id = $2 AND used_at IS NULL")
        .bind(kind.as_str())
        .bind(id)
        .execute(&mut **tx)
        .await
        .ctx("withdraw enrolment tokens")?;
    Ok(())
}

fn check_version(kind: Kind, r: &Record, if_match: Option<i64>) -> Result<(), StoreError> {
    match if_match {
        Some(v) if v != r.version => Err(StoreError::VersionMismatch {
            kind: kind.as_str(),
            expected: v,
            current: r.version,
        }),
        _ => Ok(()),
    }
}

async fn load(
    tx: &mut Transaction<'static, Any>,
    kind: Kind,
    id: &str,
) -> Result<Record, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {RECORD_COLUMNS} FROM objects WHERE kind = $1 AND id = $2"
    )))
    .bind(kind.as_str())
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .ctx("read an object")?;
    match row {
        Some(r) => Ok(record_of(&r)?),
        None => Err(StoreError::NotFound {
            kind: kind.as_str(),
            id: id.to_string(),
        }),
    }
}

async fn load_policy_objects<'e, E>(e: E) -> Result<Vec<(Kind, Value)>, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query(
        "SELECT kind, body FROM objects WHERE kind <> 'api_client' ORDER BY kind, name",
    )
    .fetch_all(e)
    .await
    .ctx("read the policy objects")?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let k: String = r.get(0);
        let b: String = r.get(1);
        if let (Some(k), Ok(v)) = (Kind::parse(&k), serde_json::from_str(&b)) {
            out.push((k, v));
        }
    }
    Ok(out)
}

async fn bump(tx: &mut Transaction<'static, Any>, key: &str) -> Result<i64, DbError> {
    sqlx::query_scalar("UPDATE meta SET value = value + 1 WHERE key = $1 RETURNING value")
        .bind(key)
        .fetch_one(&mut **tx)
        .await
        .ctx("bump a counter")
}

async fn current(tx: &mut Transaction<'static, Any>, key: &str) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_one(&mut **tx)
        .await
        .ctx("read a counter")
}

#[allow(clippy::too_many_arguments)]
async fn insert_audit(
    tx: &mut Transaction<'static, Any>,
    seq: i64,
    origin: &Origin,
    action: &str,
    kind: &str,
    object_id: &str,
    object_name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    revision: i64,
    detail: Option<&str>,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO audit (seq, at, actor, address, action, kind, object_id, object_name, before_json, after_json, revision, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(seq)
    .bind(crate::now())
    .bind(&origin.actor)
    .bind(&origin.address)
    .bind(action)
    .bind(kind)
    .bind(object_id)
    .bind(object_name)
    .bind(before.map(Value::to_string))
    .bind(after.map(Value::to_string))
    .bind(revision)
    .bind(detail)
    .execute(&mut **tx)
    .await
    .ctx("write the audit entry")?;
    Ok(())
}

/// Adds one to the counter `key` in the write transaction `tx` (the
/// audit sequence's is the store's write lock): its new value.
pub(crate) async fn bump_counter(
    tx: &mut Transaction<'static, Any>,
    key: &str,
) -> Result<i64, DbError> {
    bump(tx, key).await
}

/// The counter `key`.
pub(crate) async fn counter(tx: &mut Transaction<'static, Any>, key: &str) -> Result<i64, DbError> {
    current(tx, key).await
}

/// An audit entry for a write outside the objects (administrators): the
/// object as (kind, id, name), before and after.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn audit_entry(
    tx: &mut Transaction<'static, Any>,
    seq: i64,
    origin: &Origin,
    action: &str,
    object: (&str, &str, &str),
    change: (Option<&Value>, Option<&Value>),
    revision: i64,
    detail: Option<&str>,
) -> Result<(), DbError> {
    insert_audit(
        tx, seq, origin, action, object.0, object.1, object.2, change.0, change.1, revision, detail,
    )
    .await
}

/// What a directory sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    /// Objects added.
    pub added: usize,
    /// Objects changed.
    pub updated: usize,
    /// Objects removed.
    pub removed: usize,
    /// Groups gone from the directory but kept, flagged (an app profile
    /// names them), and users kept for an identity.
    pub flagged: Vec<String>,
    /// The revision after it.
    pub revision: i64,
    /// Groups now.
    pub groups: usize,
    /// Users now.
    pub users: usize,
}

impl Store {
    /// Makes the directory's groups and users the store's directory
    /// objects, in one write: one revision, an audit entry per object
    /// changed (see [`crate::directory`] for the rules).
    ///
    /// # Errors
    /// Maintenance, the store, or a result the gateways could not load.
    #[allow(clippy::too_many_lines, reason = "one transaction, read top to bottom")]
    pub async fn sync_directory(
        &self,
        origin: &Origin,
        dir: &crate::directory::Directory,
        force: bool,
    ) -> Result<SyncCounts, StoreError> {
        use crate::model::{Group, User};
        const DIRECTORY: &str = "directory";
        let mut tx = self.db.begin_write().await?;
        let mut seq = bump(&mut tx, "audit_seq").await?;
        let (on, why) = crate::db::maintenance(&mut *tx).await?;
        if on {
            return Err(StoreError::Maintenance(
                why.unwrap_or_else(|| "switched on by an administrator".into()),
            ));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECORD_COLUMNS}, kind FROM objects WHERE kind IN ('group', 'user', 'app_profile', 'identity')"
        )))
        .fetch_all(&mut *tx)
        .await
        .ctx("read groups and users")?;
        let mut groups: BTreeMap<String, Record> = BTreeMap::new();
        let mut users: BTreeMap<String, Record> = BTreeMap::new();
        let mut profile_groups: BTreeSet<String> = BTreeSet::new();
        let mut identity_users: BTreeSet<String> = BTreeSet::new();
        for r in &rows {
            let kind: String = r.get(6);
            let rec = record_of(r)?;
            let name = rec.body["name"].as_str().unwrap_or("").to_string();
            match kind.as_str() {
                "group" => {
                    groups.insert(name, rec);
                }
                "user" => {
                    users.insert(name, rec);
                }
                "app_profile" => {
                    for g in rec.body["groups"].as_array().into_iter().flatten() {
                        if let Some(g) = g.as_str() {
                            profile_groups.insert(g.to_string());
                        }
                    }
                }
                _ => {
                    if let Some(u) = rec.body["user"].as_str() {
                        identity_users.insert(u.to_string());
                    }
                }
            }
        }
        let is_dir = |r: &Record| r.body["source"].as_str() == Some(DIRECTORY);
        // (kind, name, existing, wanted body or None to delete)
        let mut changes: Vec<(Kind, String, Option<Record>, Option<Value>)> = Vec::new();
        let mut counts = SyncCounts::default();
        // A hand-made group or user with a directory name is left alone
        // (review h32: adopting it would hand its profile to the
        // directory's members); the directory's entry is skipped, flagged.
        for name in &dir.groups {
            let old = groups.get(name);
            if old.is_some_and(|r| !is_dir(r)) {
                counts
                    .flagged
                    .push(format!("group {name}: a hand-made group has this name"));
                continue;
            }
            let want = serde_json::to_value(Group {
                name: name.clone(),
                description: old
                    .and_then(|r| r.body["description"].as_str())
                    .unwrap_or("")
                    .to_string(),
                source: Some(DIRECTORY.into()),
                missing: false,
            })
            .expect("serialises");
            if old.map(|r| &r.body) != Some(&want) {
                changes.push((Kind::Group, name.clone(), old.cloned(), Some(want)));
            }
        }
        let mut kept_groups: BTreeSet<String> = dir.groups.clone();
        for (name, rec) in &groups {
            if dir.groups.contains(name) {
                continue;
            }
            if !is_dir(rec) {
                kept_groups.insert(name.clone());
                continue;
            }
            if profile_groups.contains(name) {
                kept_groups.insert(name.clone());
                counts.flagged.push(format!("group {name}"));
                let mut want = rec.body.clone();
                want["missing"] = Value::Bool(true);
                if want != rec.body {
                    changes.push((Kind::Group, name.clone(), Some(rec.clone()), Some(want)));
                }
            } else {
                changes.push((Kind::Group, name.clone(), Some(rec.clone()), None));
            }
        }
        for (name, in_groups) in &dir.users {
            let old = users.get(name);
            if old.is_some_and(|r| !is_dir(r)) {
                counts
                    .flagged
                    .push(format!("user {name}: a hand-made user has this name"));
                continue;
            }
            let want = serde_json::to_value(User {
                name: name.clone(),
                description: old
                    .and_then(|r| r.body["description"].as_str())
                    .unwrap_or("")
                    .to_string(),
                groups: in_groups
                    .iter()
                    .filter(|g| kept_groups.contains(*g))
                    .cloned()
                    .collect(),
                source: Some(DIRECTORY.into()),
                missing: false,
            })
            .expect("serialises");
            if old.map(|r| &r.body) != Some(&want) {
                changes.push((Kind::User, name.clone(), old.cloned(), Some(want)));
            }
        }
        for (name, rec) in &users {
            if dir.users.contains_key(name) {
                continue;
            }
            // A hand-made user keeps its groups, but not a group that was
            // just removed.
            let groups_left = |body: &Value| -> Value {
                let mut b = body.clone();
                let kept: Vec<Value> = body["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| g.as_str().is_some_and(|g| kept_groups.contains(g)))
                    .cloned()
                    .collect();
                b["groups"] = Value::Array(kept);
                b
            };
            if !is_dir(rec) {
                let want = groups_left(&rec.body);
                if want != rec.body {
                    changes.push((Kind::User, name.clone(), Some(rec.clone()), Some(want)));
                }
            } else if identity_users.contains(name) {
                counts.flagged.push(format!("user {name}"));
                let mut want = rec.body.clone();
                want["missing"] = Value::Bool(true);
                want["groups"] = Value::Array(Vec::new());
                if want != rec.body {
                    changes.push((Kind::User, name.clone(), Some(rec.clone()), Some(want)));
                }
            } else {
                changes.push((Kind::User, name.clone(), Some(rec.clone()), None));
            }
        }
        // A directory that suddenly holds much less is more likely a
        // mistyped filter or a lost permission than a reorganisation: such
        // a sync is refused unless forced (review h32).
        let existing = groups
            .values()
            .chain(users.values())
            .filter(|r| is_dir(r))
            .count();
        let removing = changes.iter().filter(|c| c.3.is_none()).count();
        let dir_users = users.values().filter(|r| is_dir(r)).count();
        if !force
            && ((dir.users.is_empty() && dir_users > 0)
                || (removing > 10 && removing * 2 > existing))
        {
            return Err(StoreError::Refused(format!(
                "refused: it would remove {removing} of the {existing} directory groups and users (a filter or permission problem?); POST /api/v1/directory/sync?force=true takes it anyway"
            )));
        }
        counts.groups = kept_groups.len();
        counts.users = dir.users.len()
            + users
                .iter()
                .filter(|(n, r)| {
                    !dir.users.contains_key(*n) && (!is_dir(r) || identity_users.contains(*n))
                })
                .count();
        if changes.is_empty() {
            counts.revision = current(&mut tx, "revision").await?;
            tx.commit().await.ctx("commit a sync")?;
            return Ok(counts);
        }
        let revision = bump(&mut tx, "revision").await?;
        let now = crate::now();
        let mut first = true;
        for (kind, name, old, want) in changes {
            if !first {
                seq = bump(&mut tx, "audit_seq").await?;
            }
            first = false;
            let (id, after) = match (&old, &want) {
                (Some(o), Some(w)) => {
                    counts.updated += 1;
                    sqlx::query(
                        "UPDATE objects SET version = $1, body = $2, updated_at = $3, revision = $4 WHERE kind = $5 AND id = $6",
                    )
                    .bind(o.version + 1)
                    .bind(w.to_string())
                    .bind(now)
                    .bind(revision)
                    .bind(kind.as_str())
                    .bind(&o.id)
                    .execute(&mut *tx)
                    .await
                    .ctx("update an object")?;
                    let r = Record {
                        id: o.id.clone(),
                        version: o.version + 1,
                        created_at: o.created_at.clone(),
                        updated_at: Timestamp(now),
                        revision,
                        body: w.clone(),
                    };
                    (o.id.clone(), Some(r))
                }
                (None, Some(w)) => {
                    counts.added += 1;
                    let id = new_id(kind.id_prefix());
                    sqlx::query(
                        "INSERT INTO objects (kind, id, name, version, body, created_at, updated_at, revision) VALUES ($1, $2, $3, 1, $4, $5, $5, $6)",
                    )
                    .bind(kind.as_str())
                    .bind(&id)
                    .bind(&name)
                    .bind(w.to_string())
                    .bind(now)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await
                    .ctx("insert an object")?;
                    let r = Record {
                        id: id.clone(),
                        version: 1,
                        created_at: Timestamp(now),
                        updated_at: Timestamp(now),
                        revision,
                        body: w.clone(),
                    };
                    (id, Some(r))
                }
                (Some(o), None) => {
                    counts.removed += 1;
                    sqlx::query("DELETE FROM objects WHERE kind = $1 AND id = $2")
                        .bind(kind.as_str())
                        .bind(&o.id)
                        .execute(&mut *tx)
                        .await
                        .ctx("delete an object")?;
                    (o.id.clone(), None)
                }
                (None, None) => continue,
            };
            let j = |r: &Record| serde_json::to_value(r).expect("records serialise");
            insert_audit(
                &mut tx,
                seq,
                origin,
                "sync",
                kind.as_str(),
                &id,
                &name,
                old.as_ref().map(j).as_ref(),
                after.as_ref().map(j).as_ref(),
                revision,
                None,
            )
            .await?;
        }
        let objects = load_policy_objects(&mut *tx).await?;
        crate::compile::check_org(&objects).map_err(StoreError::Policy)?;
        tx.commit().await.ctx("commit a sync")?;
        self.revision_tx.send_if_modified(|cur| {
            if revision > *cur {
                *cur = revision;
                true
            } else {
                false
            }
        });
        counts.revision = revision;
        Ok(counts)
    }
}
