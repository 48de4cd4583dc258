//! The database: `SQLite` (bundled, one file, WAL) by default, `PostgreSQL`
//! when several controllers share one store. One pool over sqlx's `Any`
//! driver and SQL that both accept (`$1` placeholders, no auto-increment,
//! no booleans), so every query is written once.
//!
//! Migrations are the files in `controller/migrations/`, applied in order
//! at start inside transactions, each recorded in `schema_migrations`.
//! While a controller migrates, it switches the store to maintenance
//! (read-only) so that other controllers on the same `PostgreSQL` refuse
//! writes, and switches it back afterwards unless an admin had it on.
use std::{path::Path, str::FromStr as _, time::Duration};

use sqlx::{
    Any, AnyPool, Connection as _, Executor as _, Row as _, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
};

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "objects_audit",
        include_str!("../migrations/0001_objects_audit.sql"),
    ),
    (
        2,
        "enrolment",
        include_str!("../migrations/0002_enrolment.sql"),
    ),
    (
        3,
        "key_issuers",
        include_str!("../migrations/0003_key_issuers.sql"),
    ),
    (
        4,
        "audit_detail",
        include_str!("../migrations/0004_audit_detail.sql"),
    ),
    (5, "admins", include_str!("../migrations/0005_admins.sql")),
    (
        6,
        "directory",
        include_str!("../migrations/0006_directory.sql"),
    ),
    (
        7,
        "admin_lockout",
        include_str!("../migrations/0007_admin_lockout.sql"),
    ),
];

/// The newest schema this controller knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The `PostgreSQL` advisory lock key that serialises migrations between
/// controllers ("sluice" in ASCII).
const MIGRATION_LOCK: i64 = 0x736c_7569_6365;

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no backend this controller has.
    #[error("database URL `{0}`: expected sqlite://PATH or postgres://...")]
    Url(String),
    /// A query failed.
    #[error("database: {context}: {source}")]
    Query {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema is newer than this controller.
    #[error(
        "the database's schema is version {found}, newer than this controller's {known}: run a controller of the same version or newer"
    )]
    TooNew {
        /// In the database.
        found: i64,
        /// Known here.
        known: i64,
    },
}

/// Adds context to a driver error.
pub trait Ctx<T> {
    /// Wraps the error with what was being done.
    fn ctx(self, context: &str) -> Result<T, DbError>;
}

impl<T> Ctx<T> for Result<T, sqlx::Error> {
    fn ctx(self, context: &str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query {
            context: context.to_string(),
            source,
        })
    }
}

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded.
    Sqlite,
    /// Shared.
    Postgres,
}

/// The pool and what it is.
#[derive(Debug, Clone)]
pub struct Db {
    /// The connections.
    pub pool: AnyPool,
    /// Which engine.
    pub backend: Backend,
}

impl Db {
    /// Opens (creating a `SQLite` file if missing) the database at `url`:
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::Url(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url).ctx("parse the database URL")?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .ctx("connect")?;
        if backend == Backend::Sqlite {
            // The store holds secrets' hashes and the audit log: its files
            // are the controller's alone.
            if let Some(path) = url
                .strip_prefix("sqlite://")
                .map(|p| p.split('?').next().unwrap_or(p))
            {
                use std::os::unix::fs::PermissionsExt as _;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::set_permissions(
                        format!("{path}{suffix}"),
                        std::fs::Permissions::from_mode(0o600),
                    );
                }
            }
            // Persistent in the file: readers never wait for the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&pool)
                .await
                .ctx("switch to WAL")?;
        }
        Ok(Db { pool, backend })
    }

    /// Starts a write transaction. On `SQLite` it takes the write lock at
    /// once (`BEGIN IMMEDIATE`), so two writers queue instead of one
    /// failing when it upgrades.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        match self.backend {
            Backend::Sqlite => self
                .pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .ctx("begin a write"),
            Backend::Postgres => self.pool.begin().await.ctx("begin a write"),
        }
    }

    /// The schema version the database is at (0: empty).
    pub async fn schema_version(&self) -> Result<i64, DbError> {
        ensure_migrations_table(&self.pool).await?;
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await
            .ctx("read the schema version")?;
        Ok(v.unwrap_or(0))
    }

    /// Applies the migrations this database lacks, up to `target` (the
    /// latest by default). Returns the versions applied.
    pub async fn migrate(&self, target: Option<i64>) -> Result<Vec<i64>, DbError> {
        let target = target.unwrap_or_else(latest_version);
        let mut conn = self.pool.acquire().await.ctx("acquire for migration")?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await
                .ctx("take the migration lock")?;
        }
        let result = self.migrate_locked(&mut conn, target).await;
        if self.backend == Backend::Postgres {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await;
        }
        result
    }

    async fn migrate_locked(
        &self,
        conn: &mut sqlx::AnyConnection,
        target: i64,
    ) -> Result<Vec<i64>, DbError> {
        ensure_migrations_table(&mut *conn).await?;
        let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await
            .ctx("read the schema version")?;
        let found = found.unwrap_or(0);
        if found > latest_version() {
            return Err(DbError::TooNew {
                found,
                known: latest_version(),
            });
        }
        let pending: Vec<_> = MIGRATIONS
            .iter()
            .filter(|(v, _, _)| *v > found && *v <= target)
            .collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        // Read-only while migrating (when there is a store to protect).
        let was_on = if found >= 1 {
            let before = maintenance(&mut *conn).await?;
            set_maintenance(
                &mut *conn,
                true,
                Some(&format!(
                    "schema migration to version {}",
                    pending.last().unwrap().0
                )),
            )
            .await?;
            Some(before)
        } else {
            None
        };
        let mut applied = Vec::new();
        let mut failure = None;
        for (version, name, sql) in pending {
            log::info!("database: applying migration {version} ({name})");
            let mut tx = conn.begin().await.ctx("begin a migration")?;
            let r = async {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                    .execute(&mut *tx)
                    .await
                    .ctx(&format!("migration {version} ({name})"))?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(*version)
                .bind(*name)
                .bind(crate::now())
                .execute(&mut *tx)
                .await
                .ctx("record a migration")?;
                Ok::<_, DbError>(())
            }
            .await;
            match r {
                Ok(()) => {
                    tx.commit().await.ctx("commit a migration")?;
                    applied.push(*version);
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    failure = Some(e);
                    break;
                }
            }
        }
        // A failed migration leaves the store read-only: the schema is
        // between versions and an operator must look.
        if failure.is_none() {
            match was_on {
                // An admin's maintenance stays, with its reason.
                Some((true, why)) => set_maintenance(&mut *conn, true, why.as_deref()).await?,
                _ => set_maintenance(&mut *conn, false, None).await?,
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    /// Writes a consistent copy of a `SQLite` store to `dest` (which must not
    /// exist). `PostgreSQL` stores are backed up with `pg_dump`.
    pub async fn backup(&self, dest: &Path) -> Result<(), DbError> {
        if self.backend != Backend::Sqlite {
            return Err(DbError::Url(
                "backup: a PostgreSQL store is backed up with pg_dump".into(),
            ));
        }
        let dest = dest
            .to_str()
            .ok_or_else(|| DbError::Url("backup path".into()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest)
            .execute(&self.pool)
            .await
            .ctx("VACUUM INTO")?;
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600));
        Ok(())
    }
}

async fn ensure_migrations_table<'e, E>(e: E) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(e)
    .await
    .ctx("create schema_migrations")?;
    Ok(())
}

/// Whether the store is read-only, and why.
pub async fn maintenance<'e, E>(e: E) -> Result<(bool, Option<String>), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT value, text FROM meta WHERE key = 'maintenance'")
        .fetch_one(e)
        .await
        .ctx("read maintenance mode")?;
    Ok((row.get::<i64, _>(0) != 0, row.get::<Option<String>, _>(1)))
}

/// Switches maintenance (read-only) mode.
pub async fn set_maintenance<'e, E>(e: E, on: bool, why: Option<&str>) -> Result<(), DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query("UPDATE meta SET value = $1, text = $2 WHERE key = 'maintenance'")
        .bind(i64::from(on))
        .bind(why)
        .execute(e)
        .await
        .ctx("set maintenance mode")?;
    Ok(())
}
