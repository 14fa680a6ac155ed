//! Starting and stopping a node: storage, database, and the DIMSE listener, wired together.
//! Used by `firstread serve` and by the integration tests (port 0, their own database).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use firstread_dimse::StoreScp;
use firstread_store::{Index, Storage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ingest::Ingest;

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The address the Store SCP listens on (the real port when configured with port 0).
    pub dimse_addr: SocketAddr,
    /// The index (shared pool).
    pub index: Index,
    /// The storage root.
    pub storage: Storage,
    shutdown: CancellationToken,
    scp: JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Opens storage, connects and migrates the database, binds the listener and starts
    /// accepting associations.
    ///
    /// # Errors
    /// Storage root not writable, database unreachable, migration failure, port in use.
    pub async fn start(config: &Config) -> anyhow::Result<Node> {
        let storage = Storage::open(&config.storage.root, config.storage.fsync)
            .await
            .with_context(|| format!("opening storage root {}", config.storage.root.display()))?;
        let index = Index::connect(&config.database.url, config.database.max_connections)
            .await
            .context("connecting to PostgreSQL")?;
        index.migrate().await.context("migrating the database")?;
        let listener = tokio::net::TcpListener::bind(config.dimse.listen)
            .await
            .with_context(|| format!("binding {}", config.dimse.listen))?;
        let dimse_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let scp = StoreScp::new(config.scp(), Arc::new(Ingest::new(storage.clone(), index.clone())));
        let scp = tokio::spawn(scp.serve(listener, shutdown.clone()));
        Ok(Node { dimse_addr, index, storage, shutdown, scp })
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting associations and waits for those in progress (bounded by the idle timeout).
    ///
    /// # Errors
    /// When the listener task failed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the node stops (after its shutdown token is cancelled).
    ///
    /// # Errors
    /// When the listener task failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.scp.await.context("Store SCP task panicked")?.context("Store SCP failed")?;
        Ok(())
    }
}
