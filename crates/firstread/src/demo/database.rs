//! The demo's temporary PostgreSQL database.

use super::*;

/// A uniquely named PostgreSQL database (`firstread_demo_<12 hex digits>`) for one run; drop it
/// with [`TempDatabase::drop_database`].
#[derive(Debug)]
pub struct TempDatabase {
    /// Its name.
    pub name: String,
    /// Connection URL of the database.
    pub url: String,
    admin_url: String,
}

impl TempDatabase {
    /// Creates the database on the server of `admin_url`.
    ///
    /// # Errors
    /// Server unreachable, authentication refused, no CREATEDB right.
    pub async fn create(admin_url: &str) -> anyhow::Result<TempDatabase> {
        let name = format!("firstread_demo_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = admin_pool(admin_url).await?;
        let created = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await;
        admin.close().await;
        created.with_context(|| format!("CREATE DATABASE {name}"))?;
        info!(database = %name, "temporary database created");
        Ok(TempDatabase { url: with_database(admin_url, &name), name, admin_url: admin_url.to_owned() })
    }

    /// Drops the database, closing any connection still open to it (`WITH (FORCE)`); when that
    /// fails (server unreachable), says so on stderr with the name, for the operator to drop it.
    pub async fn drop_database(self) {
        let dropped = async {
            let admin = admin_pool(&self.admin_url).await?;
            let dropped =
                sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).execute(&admin).await;
            admin.close().await;
            dropped.with_context(|| format!("DROP DATABASE {}", self.name))
        }
        .await;
        match dropped {
            Ok(_) => info!(database = %self.name, "temporary database dropped"),
            Err(e) => eprintln!("warning: could not drop the temporary database {}: {e:#}", self.name),
        }
    }
}

async fn admin_pool(url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redacted_url(url)))
}

/// `url` with its database path replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        let admin = "postgres://postgres@127.0.0.1:5432/postgres";
        assert_eq!(with_database(admin, "x"), "postgres://postgres@127.0.0.1:5432/x");
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(redacted_url("postgres://u:secret@h:1/db"), "postgres://u:***@h:1/db");
        assert_eq!(redacted_url(admin), admin);
        assert_eq!(redacted_url("postgres://h:5432/db"), "postgres://h:5432/db");
    }
}
