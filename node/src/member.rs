//! What every Shoal process runs to be a member of the cluster, storage node
//! or gateway alike: the bound RPC listener, its gossip state, the pool of
//! authenticated connections to the others, the accept loop and the gossip
//! loop (mini-redis's `server::run(listener, shutdown)` shape, with the
//! service given by the caller).
//!
//! A node and a gateway differ only in the [`Spec`] they announce and the
//! service they serve; everything that makes them safe to expose (the cluster
//! secret, the connection bounds) is decided here, once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use shoal_gossip::{GossipError, LocalMember, Membership, Role};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::advertise::{Identity, Reachability};
use crate::config::{AdvertiseCheck, Config};
use crate::env::{Env, Listener};
use crate::membership::{SharedMembership, Uptime};
use crate::pool::Pool;
use crate::secure::{SecretError, Transport};
use crate::serve::{Connection, ServeLimits, ServerTransport};

/// How this member announces itself in gossip.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Storage node or gateway.
    pub role: Role,
    /// The gossiped weight (flag bits included).
    pub weight: u32,
    /// Ever-rising across restarts of this member.
    pub incarnation: u64,
    /// How long dialing a peer (and its handshake) may take.
    pub connect_timeout: Duration,
}

/// Why a member could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The listen address could not be bound or read back.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No usable cluster secret.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The gossip state machine refused the configuration.
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// The address peers would dial cannot be dialed (`0.0.0.0`, `::`, or
    /// port 0).
    #[error("member.advertise {advertise:?} cannot be dialed by peers: {why}")]
    Advertise {
        /// The address this member would announce.
        advertise: String,
        /// What is wrong and what to set.
        why: &'static str,
    },
    /// Dialing the advertised address did not reach this member (see
    /// [`crate::advertise`]).
    #[error(
        "member.advertise {advertise:?} {problem}; peers dial this member there, so set \
         member.advertise to the address they reach it at (or member.advertise_check = \"warn\" \
         to serve anyway, on a host that cannot dial itself at that address, such as one behind \
         a NAT without hairpinning)"
    )]
    AdvertiseUnreachable {
        /// The address this member would announce.
        advertise: String,
        /// What the dial found: nothing, or which member.
        problem: String,
    },
}

/// Refuses an announced address no peer could dial: an unspecified IP
/// (`0.0.0.0`, `::`, the listen address of a member that binds every
/// interface) or port 0. A host name passes: it is resolved by each peer.
pub fn check_advertise(advertise: &str) -> Result<(), MemberError> {
    let Ok(addr) = advertise.parse::<SocketAddr>() else {
        return Ok(());
    };
    let why = if addr.ip().is_unspecified() {
        "an unspecified IP means every interface when listening, no host when \
         dialing; set member.advertise to this host's address (or name) as peers reach it"
    } else if addr.port() == 0 {
        "port 0 is no port to dial; set member.advertise with the bound port"
    } else {
        return Ok(());
    };
    Err(MemberError::Advertise {
        advertise: advertise.to_string(),
        why,
    })
}

/// A member's shared pieces, before it serves.
pub struct Member {
    /// Its id.
    pub id: String,
    /// The bound RPC address.
    pub addr: SocketAddr,
    /// The address others dial.
    pub advertise: String,
    /// Its gossip state.
    pub membership: SharedMembership,
    /// Authenticated clients of the other members.
    pub pool: Arc<Pool>,
    /// The gossip clock.
    pub uptime: Uptime,
    /// Its RPC port's connections, counted by the accept loop.
    pub connections: Arc<crate::observe::ConnStats>,
    /// Whether it, and its peers, can be dialed where they say they are.
    pub reach: Arc<Reachability>,
    incarnation: u64,
    advertise_check: AdvertiseCheck,
    advertise_check_for: Duration,
    /// How long a peer's dials must keep failing, while gossip calls it
    /// alive, before it is reported (`gossip.failure_timeout_ms`).
    undialable_after: Duration,
    transport: Transport,
    limits: ServeLimits,
    interval: Duration,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Loads the cluster secret and binds `member.listen`: what a process checks
/// before it touches anything else, so that a missing secret or a taken port
/// fails start-up at once.
pub async fn bind(
    config: &Config,
    env: &Env,
) -> Result<(Transport, Box<dyn Listener>, SocketAddr), MemberError> {
    let transport = config.transport()?;
    let addr = config.member.listen.clone();
    let listener = env
        .net
        .bind(addr.clone())
        .await
        .map_err(|source| MemberError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| MemberError::Bind { addr, source })?;
    Ok((transport, listener, local))
}

impl Member {
    /// Sets up gossip and the pool for a member bound at `addr` (from [`bind`]).
    pub fn new(
        config: &Config,
        env: &Env,
        transport: Transport,
        addr: SocketAddr,
        spec: Spec,
    ) -> Result<Self, MemberError> {
        let id = config.member.id.clone();
        let advertise = config
            .member
            .advertise
            .clone()
            .unwrap_or_else(|| addr.to_string());
        check_advertise(&advertise)?;
        let uptime = Uptime::start();
        let seeds: Vec<String> = config
            .member
            .seeds
            .iter()
            .filter(|s| **s != advertise)
            .cloned()
            .collect();
        let rng = StdRng::seed_from_u64(env.clock.now_millis() ^ fnv1a(&id));
        let membership = Membership::new(
            crate::membership::gossip_config(config),
            LocalMember {
                id: id.clone().into(),
                address: advertise.clone(),
                role: spec.role,
                weight: spec.weight,
                zone: config.member.zone.clone(),
                incarnation: spec.incarnation,
            },
            seeds,
            rng,
            uptime.now(),
        )?;
        let pool = Arc::new(Pool::new(
            env.net.clone(),
            transport.clone(),
            spec.connect_timeout,
            config.max_frame_bytes(),
        ));
        Ok(Self {
            id,
            addr,
            advertise,
            membership: Arc::new(Mutex::new(membership)),
            pool,
            uptime,
            connections: Arc::default(),
            reach: Arc::default(),
            incarnation: spec.incarnation,
            advertise_check: config.member.advertise_check,
            advertise_check_for: Duration::from_millis(config.member.advertise_check_ms),
            undialable_after: Duration::from_millis(config.gossip.failure_timeout_ms),
            transport,
            limits: ServeLimits::from_config(config),
            interval: Duration::from_millis(config.gossip.interval_ms),
        })
    }

    /// Starts serving `listener` (from [`bind`]): the accept loop
    /// (handshake, bounds, then `on_connection`), then checks that the
    /// advertised address reaches this member (`member.advertise_check`),
    /// then the gossip loop, all until `shutdown`. A refused check stops the
    /// accept loop and returns the error before this member gossips, so the
    /// cluster never learns the wrong address.
    pub async fn run<F, Fut>(
        &self,
        listener: Box<dyn Listener>,
        shutdown: watch::Receiver<bool>,
        on_connection: F,
    ) -> Result<Vec<JoinHandle<()>>, MemberError>
    where
        F: Fn(ServerTransport, Connection) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let accept = tokio::spawn(crate::serve::accept_loop(
            listener,
            self.transport.clone(),
            self.limits,
            self.connections.clone(),
            shutdown.clone(),
            on_connection,
        ));
        let checked = crate::advertise::check_at_start(
            self.advertise_check,
            self.pool.clone(),
            self.advertise.clone(),
            Identity {
                id: self.id.clone(),
                incarnation: self.incarnation,
            },
            self.advertise_check_for,
            self.reach.clone(),
            shutdown.clone(),
        )
        .await;
        let background = match checked {
            Ok(background) => background,
            Err(found) => {
                accept.abort();
                return Err(MemberError::AdvertiseUnreachable {
                    advertise: self.advertise.clone(),
                    problem: found.problem().unwrap_or_default(),
                });
            }
        };
        let gossip = tokio::spawn(crate::membership::run(
            self.membership.clone(),
            self.pool.clone(),
            self.uptime,
            self.advertise.clone(),
            self.interval,
            crate::membership::Watch {
                reach: self.reach.clone(),
                after: self.undialable_after,
            },
            shutdown,
        ));
        Ok([Some(accept), Some(gossip), background]
            .into_iter()
            .flatten()
            .collect())
    }
}

/// FNV-1a of a string: seeds the gossip random generator per member, so that
/// two members started in the same millisecond still pick different peers.
/// Not for security.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod advertise_tests {
    use super::check_advertise;

    #[test]
    fn addresses_no_peer_can_dial_are_refused_with_the_key_to_set() {
        for bad in ["0.0.0.0:7000", "[::]:7000", "10.0.0.5:0"] {
            let err = check_advertise(bad).unwrap_err().to_string();
            assert!(err.contains("member.advertise"), "{bad}: {err}");
        }
        for good in [
            "10.0.0.5:7000",
            "[fe80::1]:7000",
            "node-1.shoal:7000",
            "node-1:7000",
        ] {
            assert!(check_advertise(good).is_ok(), "{good}");
        }
    }
}
