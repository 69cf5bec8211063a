//! `status` in fleet mode: every instance of the fleet as the shared database knows it (id,
//! host, pid, last heartbeat, leases held), each judged alive or lost by its heartbeat's age
//! against the lease.
//!
//! This module must not join the fleet (a command is not an instance) nor change anything.

use serde::Serialize;

use super::CommandError;
use crate::config::PostgresState;
use crate::store::{Fleet, InstanceRow};

#[derive(Serialize)]
pub struct FleetJson {
    /// The database, as configured (the URL never holds the password).
    pub database: String,
    pub lease_ms: u128,
    pub instances: Vec<InstanceJson>,
}

#[derive(Serialize)]
pub struct InstanceJson {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    /// How long ago the last heartbeat was, by the database's clock.
    pub heartbeat_age_ms: i64,
    /// No heartbeat for longer than a lease: its leases are there for the taking.
    pub lost: bool,
    pub batch_leases: i64,
    pub scan_leases: i64,
}

/// Reads the fleet's instances from its database.
pub async fn fleet(state: &PostgresState) -> Result<FleetJson, CommandError> {
    let fleet = Fleet::connect(state).await?;
    let rows = fleet.instances().await;
    fleet.close().await;
    let lease_ms = state.lease.as_millis();
    let instances = rows?
        .into_iter()
        .map(|row| instance_json(row, lease_ms))
        .collect();
    Ok(FleetJson {
        database: state.url.clone(),
        lease_ms,
        instances,
    })
}

fn instance_json(row: InstanceRow, lease_ms: u128) -> InstanceJson {
    let age = row.now.saturating_sub(row.heartbeat_at);
    InstanceJson {
        lost: u128::try_from(age).unwrap_or(0) > lease_ms,
        started_at: super::iso(row.started_at),
        heartbeat_at: super::iso(row.heartbeat_at),
        heartbeat_age_ms: age,
        id: row.id,
        host: row.host,
        pid: row.pid,
        batch_leases: row.batch_leases,
        scan_leases: row.scan_leases,
    }
}

pub fn render(fleet: &FleetJson) -> String {
    let mut out = format!(
        "fleet database {}: {} instance(s), lease {} ms\n",
        fleet.database,
        fleet.instances.len(),
        fleet.lease_ms
    );
    for i in &fleet.instances {
        out.push_str(&format!(
            "  {} on {} (pid {}): {}, heartbeat {} ms ago, {} batch lease(s), {} scan lease(s)\n",
            i.id,
            i.host,
            i.pid,
            if i.lost { "LOST" } else { "alive" },
            i.heartbeat_age_ms,
            i.batch_leases,
            i.scan_leases
        ));
    }
    out
}
