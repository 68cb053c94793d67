//! `tokend serve`: opens the database, starts the actors and the HTTP server, and stops them
//! in order on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::dev::ServerHandle;
use actix_web::{middleware, web, App, HttpServer};

use crate::actors::cache::CacheActor;
use crate::actors::{Actors, AlertActor};
use crate::api::{self, AppState};
use crate::broker::{Broker, BrokerParts};
use crate::cache::{CacheStore, TokenCache};
use crate::config::Config;
use crate::daemon::shutdown::Shutdown;
use crate::db::Pool;
use crate::error::{Error, Result};
use crate::history::spool::Spool;
use crate::history::HistoryRecorder;
use crate::lifecycle::webhook::Webhook;
use crate::policy::adaptive::AdaptiveLimits;
use crate::policy::budget::LoginBudgets;
use crate::policy::circuit::Circuits;
use crate::redis::RedisLink;
use crate::slots::concurrency::ConcurrencyActor;
use crate::slots::redis::RedisSlots;
use crate::slots::Slots;
use crate::vault::crypto::SecretKey;
use crate::watch::metrics::Metrics;
use crate::watch::monitor::MonitorActor;

/// HTTP worker threads: the handlers only await actors and the cache, so two are plenty and
/// keep the idle footprint small.
const HTTP_WORKERS: usize = 2;
/// Longest wait for the history to reach the database (or the spool) at stop.
const FLUSH_AT_STOP: Duration = Duration::from_secs(15);
/// Seconds after the grace for the last answers (503 `SHUTTING_DOWN`) to be written.
const ANSWER_MARGIN_SECS: u64 = 2;
/// How often the stop says what it still waits for.
const STOP_PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often start-up migrations are retried while the database is unreachable.
const MIGRATION_RETRY: Duration = Duration::from_secs(10);

/// A started server: where it listens and how to stop it.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub state: AppState,
    /// Turns true once the database schema is in place (at once, unless the database was
    /// unreachable at start).
    pub database_ready: tokio::sync::watch::Receiver<bool>,
    server: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Waits until the server has stopped (by [`ServerHandle::stop`] or a signal).
    pub async fn wait(self) -> Result<()> {
        match self.server.await {
            Ok(result) => result.map_err(|e| Error::io(self.addr.to_string(), e)),
            Err(e) => Err(Error::Internal(format!("HTTP server task: {e}"))),
        }
    }
}

/// Opens storage, starts the actors and binds the HTTP server. Must run inside an actix system.
///
/// The port is taken first, before anything is written (a second instance on the same port
/// stops at once and touches nothing); then the database, the key and the checks of what
/// would otherwise fail on the first acquisition.
pub async fn start(config: Arc<Config>) -> Result<RunningServer> {
    crate::daemon::checks::command_programs(&config)?;
    let listener = bind(&config)?;
    let pool = Pool::connect(config.database.url.expose(), config.database.pool_size)?;
    let database_ready = migrate_at_start(pool.clone()).await?;
    let key = load_key(&config, &pool, *database_ready.borrow()).await?;
    // The one Redis link: every part that keeps state in Redis is handed this one.
    let link = RedisLink::from_config(&config.redis)?;
    if let Some(link) = &link {
        log_redis_state(link).await;
    }
    let store = CacheStore::new(link.as_ref());
    let cache = TokenCache::new(store, &config.redis.key_prefix, key.clone());
    let (actors, slots, broker) = start_parts(&config, &pool, &key, &cache, link.as_ref())?;
    let state = AppState {
        config: config.clone(),
        actors,
        pool,
        key,
        cache,
        broker,
        slots,
        shutdown: Shutdown::default(),
        listen_host: api::same_origin::host_name(&config.server.listen).into_owned(),
    };
    let (addr, handle, server) = serve_http(&config, listener, state.clone())?;
    log::info!(
        "event=listening addr={addr} database={} cache={} sites={}",
        state.pool.backend().name(),
        state.cache.store().backend(),
        config.sites.len()
    );
    Ok(RunningServer {
        addr,
        handle,
        state,
        database_ready,
        server,
    })
}

/// The secret key: checked against a stored secret when the database is ready, else from
/// its file alone (the check waits for the database).
async fn load_key(config: &Arc<Config>, pool: &Pool, database_ready: bool) -> Result<SecretKey> {
    if !database_ready {
        return SecretKey::load(&config.security);
    }
    let (config, pool) = (config.clone(), pool.clone());
    web::block(move || -> Result<SecretKey> {
        let key = crate::daemon::checks::load_key(&config, &pool)?;
        crate::daemon::checks::key_opens_stored_secret(&mut *pool.get()?, &key)?;
        Ok(key)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// The parts, each built once what it needs exists: the monitor, the history and its
/// retention job, the login slots, `CacheActor` (the cache's sweep and health), the broker
/// over all of these, the webhook, and last the alerts, which watch everything else.
fn start_parts(
    config: &Arc<Config>,
    pool: &Pool,
    key: &SecretKey,
    cache: &TokenCache,
    link: Option<&RedisLink>,
) -> Result<(Actors, Slots, Broker)> {
    let metrics = Arc::new(Metrics::new(cache.counters.clone()));
    let monitor = MonitorActor::new(cache.counters.clone(), metrics.clone()).start();
    let history = HistoryRecorder::start(pool.clone(), Spool::new(&config.history.spool_file));
    crate::history::retention::start(pool.clone(), config.history.retention_days);
    let concurrency = ConcurrencyActor::new(&config.concurrency).start();
    let redis_slots = link.map(|link| RedisSlots::new(link.clone()).with_database(pool.clone()));
    let slots = Slots::new(concurrency.clone(), redis_slots, &config.concurrency);
    let cache_actor = CacheActor::new(cache).start();
    // SPEC §13: alerts and pending captchas announced by webhook.
    let webhook = Webhook::start(config, metrics.clone());
    let broker = Broker::new(BrokerParts {
        config: config.clone(),
        pool: pool.clone(),
        key: key.clone(),
        cache: cache.clone(),
        slots: slots.clone(),
        monitor: monitor.clone(),
        history: history.clone(),
        circuits: Circuits::new(link.cloned()),
        metrics: metrics.clone(),
        budgets: LoginBudgets::new(link.cloned(), pool.clone()),
        adaptive: AdaptiveLimits::new(link.cloned(), slots.clone(), metrics.clone()),
        checkouts: crate::lifecycle::checkout::Checkouts::new(link.cloned()),
        webhook: webhook.clone(),
    })?;
    broker.start_checkout_sweeper();
    broker.watch_accounts();
    // SPEC §13: tokens in use probed.
    broker.start_probes()?;
    let alert = AlertActor::new(
        config.alerts.clone(),
        cache_actor.clone(),
        monitor.clone(),
        pool.clone(),
        broker.clone(),
        webhook,
    )
    .start();
    let actors = Actors {
        cache: cache_actor,
        concurrency,
        monitor,
        history,
        alert,
        metrics,
    };
    Ok((actors, slots, broker))
}

/// The HTTP server on the taken port, spawned so that it runs whether or not anybody awaits
/// it: where it listens, how to stop it, and its task.
fn serve_http(
    config: &Config,
    listener: std::net::TcpListener,
    state: AppState,
) -> Result<(
    SocketAddr,
    ServerHandle,
    actix_web::rt::task::JoinHandle<std::io::Result<()>>,
)> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(config.server.listen.clone(), e))?;
    let data = web::Data::new(state);
    let request_timeout = crate::config::seconds(config.server.client_request_timeout);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(middleware::from_fn(api::deadline::bound_body))
            .wrap(middleware::from_fn(api::auth::require_bearer))
            // Outermost: a request a web page forged is refused before anything else.
            .wrap(middleware::from_fn(api::same_origin::check))
            .configure(api::configure)
    })
    .workers(HTTP_WORKERS)
    // The head within the bound (408 after it); the body is bounded by `bound_body`.
    .client_request_timeout(request_timeout)
    .client_disconnect_timeout(request_timeout)
    // Past the grace, waiting callers are answered 503 (see `serve`); the margin lets those
    // answers be written before actix closes what is left.
    .shutdown_timeout(config.server.shutdown_grace.ceil() as u64 + ANSWER_MARGIN_SECS)
    .disable_signals()
    .listen(listener)
    .map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    Ok((bound, handle, actix_web::rt::spawn(server)))
}

/// Takes the port of `server.listen`; a port in use is [`Error::Listen`] (not a configuration
/// mistake: the same file works once the other process is gone).
fn bind(config: &Config) -> Result<std::net::TcpListener> {
    let addr = config.server.listen_addr()?;
    let listener = std::net::TcpListener::bind(addr).map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Listen {
            addr: addr.to_string(),
            source,
        })?;
    Ok(listener)
}

/// One line saying whether Redis answers now: with Redis down tokend starts anyway (on
/// in-process limits), and the operator should know from the first line, not the first use.
async fn log_redis_state(redis: &RedisLink) {
    match tokio::time::timeout(Duration::from_secs(2), redis.ping()).await {
        Ok(Ok(_)) => log::info!("event=redis_state state=up url={}", redis.display_url()),
        Ok(Err(e)) => log::warn!(
            "event=redis_state state=down url={} error=\"{e}\" note=\"in-process cache and limits until it is back\"",
            redis.display_url()
        ),
        Err(_) => log::warn!(
            "event=redis_state state=down url={} error=\"no answer within 2s\" note=\"in-process cache and limits until it is back\"",
            redis.display_url()
        ),
    }
}

/// Runs migrations before serving. An unreachable database does not stop start-up (cached
/// tokens can still be served); the migrations are retried in the background until they run.
/// A migration that fails on a reachable database does stop it.
/// The answer says whether the schema is in place now; the watch turns true once it is.
async fn migrate_at_start(pool: Pool) -> Result<tokio::sync::watch::Receiver<bool>> {
    let (ready, watch) = tokio::sync::watch::channel(false);
    let first = {
        let pool = pool.clone();
        web::block(move || pool.migrate())
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    };
    match first {
        Ok(applied) => {
            log_applied(&applied);
            let _ = ready.send(true);
            Ok(watch)
        }
        Err(Error::DatabaseUnavailable(reason)) => {
            log::error!(
                "event=database_unreachable phase=start error=\"{reason}\" retry_in={}s",
                MIGRATION_RETRY.as_secs()
            );
            actix_web::rt::spawn(async move {
                loop {
                    actix_web::rt::time::sleep(MIGRATION_RETRY).await;
                    let pool = pool.clone();
                    match web::block(move || pool.migrate()).await {
                        Ok(Ok(applied)) => {
                            log_applied(&applied);
                            log::info!("event=database_reachable phase=start");
                            let _ = ready.send(true);
                            return;
                        }
                        Ok(Err(e)) => log::warn!("event=migration_retry error=\"{e}\""),
                        Err(e) => log::warn!("event=migration_retry error=\"{e}\""),
                    }
                }
            });
            Ok(watch)
        }
        Err(e) => Err(e),
    }
}

fn log_applied(applied: &[String]) {
    if applied.is_empty() {
        log::info!("event=migrations_current");
    } else {
        log::info!("event=migrations_applied versions={}", applied.join(","));
    }
}

/// `tokend serve`: start, then stop gracefully on SIGTERM or SIGINT.
pub async fn serve(config: Arc<Config>) -> Result<()> {
    let running = start(config).await?;
    // READY=1 once the database, the actors and HTTP are all up: HTTP already serves (cached
    // tokens, health) while an unreachable database is waited for.
    let mut database_ready = running.database_ready.clone();
    actix_web::rt::spawn(async move {
        if database_ready.wait_for(|ready| *ready).await.is_ok() {
            crate::daemon::systemd::ready();
        }
    });
    crate::daemon::systemd::start_watchdog(running.state.actors.monitor.clone());
    let handle = running.handle.clone();
    let broker = running.state.broker.clone();
    let state = running.state.clone();
    actix_web::rt::spawn(async move {
        let signal = shutdown_signal().await;
        log::info!("event=shutdown signal={signal}");
        crate::daemon::systemd::stopping();
        actix_web::rt::spawn(force_on_second_signal());
        actix_web::rt::spawn(end_grace(state));
        handle.stop(true).await;
    });
    running.wait().await?;
    // Requests are answered; now the history they recorded.
    match tokio::time::timeout(FLUSH_AT_STOP, broker.flush_history()).await {
        Ok(Ok(0)) => log::info!("event=history_flushed"),
        Ok(Ok(waiting)) => log::warn!("event=history_flushed spooled={waiting} note=\"written to the database at next start\""),
        Ok(Err(e)) => log::error!("event=history_not_flushed error=\"{e}\""),
        Err(_) => log::error!("event=history_flush_timeout seconds={}", FLUSH_AT_STOP.as_secs()),
    }
    log::info!("event=stopped");
    Ok(())
}

/// While the grace lasts, says every second how many callers and logins are still running;
/// when it ends, logs and records each login still running, and answers the waiting callers
/// 503 `SHUTTING_DOWN`.
async fn end_grace(state: AppState) {
    let grace = crate::config::seconds(state.config.server.shutdown_grace);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let requests = state.shutdown.waiting_now();
        let logins = state.broker.running_logins().logging_in_now().len();
        if requests == 0 && logins == 0 {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        log::info!(
            "event=shutdown_waiting requests={requests} logins={logins} grace_left={:.1}s",
            left.as_secs_f64()
        );
        tokio::time::sleep(left.min(STOP_PROGRESS_EVERY)).await;
    }
    let abandoned = state
        .broker
        .running_logins()
        .abandon_all(&state.actors.history);
    log::warn!(
        "event=shutdown_grace_over requests={} logins_abandoned={abandoned}",
        state.shutdown.waiting_now()
    );
    state.shutdown.end_grace();
}

/// A SIGINT during the stop (Ctrl-C pressed again): exit at once. Only SIGINT: a second
/// SIGTERM (systemd, a script that repeats itself) keeps the graceful stop.
async fn force_on_second_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut int) = signal(SignalKind::interrupt()) else {
        return;
    };
    if int.recv().await.is_some() {
        log::warn!("event=shutdown_forced signal=SIGINT");
        std::process::exit(130);
    }
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("event=signal_handler_failed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
