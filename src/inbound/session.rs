//! One client session: reads bytes, feeds `smtp::server`, acts on its
//! steps (AUTH check, STARTTLS, a received message to intake), writes its
//! replies, reports connections and refusals as events, and enforces
//! per-stage timeouts and shutdown. May call: `smtp`, `config`, `conn`,
//! `events`, `intake`, `runtime::pool`, `inbound::auth_limit`, `inbound`
//! (`ShardInbound`). Must never: write to the spool itself (a message goes
//! to `intake`, and its reply waits for the result).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpStream;

use super::auth_limit::{failure_delay, AuthAnswer, AuthAsk, Verdict};
use super::ShardInbound;
use crate::config::{Config, Inbound, Listener};
use crate::conn::{with_timeout, Conn};
use crate::events::Event;
use crate::intake::Arrival;
use crate::reply::Reply;
use crate::runtime::pool::PoolBuf;
use crate::smtp::server::{RejectPhase, TimeLimits};
use crate::smtp::{ServerSession, ServerSettings, Step};

/// Read size while waiting for commands: small, since idle sessions hold it.
pub(super) const COMMAND_READ_OCTETS: usize = 1024;

enum Wake {
    Data(std::io::Result<usize>),
    Timeout,
    Shutdown,
}

fn time_limits(inbound: &Inbound) -> TimeLimits {
    TimeLimits {
        command: inbound.idle_time,
        data: inbound.data_timeout,
        min_data_rate_octets_per_sec: inbound.min_data_rate,
        max_session: inbound.max_session_time,
    }
}

fn settings(
    config: &Config,
    listener: &Listener,
    inbound: &Inbound,
    can_relay: bool,
) -> ServerSettings {
    ServerSettings {
        hostname: config.hostname.clone(),
        max_command_line_octets: inbound.max_command_line_octets,
        max_data_line_octets: inbound.max_data_line_octets,
        message_size: inbound.message_size,
        max_recipients_per_message: inbound.max_recipients_per_message,
        max_errors_per_session: inbound.max_errors_per_session,
        max_receptions_per_connection: inbound.max_receptions_per_connection,
        require_ehlo: inbound.require_ehlo,
        allow_null_envelope_sender: inbound.allow_null_envelope_sender,
        starttls_available: listener.tls.is_some(),
        auth_available: listener.credentials.is_some(),
        auth_requires_tls: inbound.auth_requires_tls,
        can_relay,
        relay_domains: config.relay_domains.clone(),
        reject_8bit_without_8bitmime: inbound.reject_8bit_without_8bitmime,
    }
}

/// Runs a session to its end; never panics on client input.
pub async fn run(state: Rc<ShardInbound>, stream: TcpStream, listener_name: String) {
    let config = state.config.get();
    let peer = stream.peer_addr().ok();
    let local = stream.local_addr().ok();
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
    let mut conn = Conn::Plain(stream);
    let Some(listener) = config.listeners.iter().find(|l| l.name == listener_name) else {
        // The listener was removed by a reload; its socket lives until restart.
        let _ = conn
            .write_all(
                format!("421 4.3.2 {} service not available\r\n", config.hostname).as_bytes(),
            )
            .await;
        conn.close().await;
        return;
    };
    let (inbound, can_relay) = listener.for_peer(ip);
    let max_sessions = config.listener_sessions(state.shard, listener);
    let Some(_slot) = state.admit(
        &listener.name,
        peer,
        max_sessions,
        inbound.max_connections_per_ip,
    ) else {
        let text = format!("{} too many connections, try again later", config.hostname);
        state.events.emit(Event::Rejection {
            phase: RejectPhase::Connect,
            code: 421,
            reply: &text,
            peer,
            local,
        });
        let msg = format!("421 4.7.0 {text}\r\n");
        let _ = conn.write_all(msg.as_bytes()).await;
        conn.close().await;
        return;
    };
    let _ = match &conn {
        Conn::Plain(s) => s.set_nodelay(true),
        _ => Ok(()),
    };
    let mut sess = ServerSession::with_buffers(
        Rc::new(settings(&config, listener, inbound, can_relay)),
        Some(ip),
        false,
        state.line_buffers.take(),
        state.line_buffers.take(),
    );
    sess.start_timers(time_limits(inbound), Instant::now());
    // A reload changes the shard's budget from the next session on.
    state.data_budget.set_limit(config.inbound_data_budget);
    sess.set_content_budget(state.data_budget.clone());
    // Small while idle; a pooled DATA buffer while content arrives, handed
    // back when the message is through. Both come from the shard's pools.
    let mut command_buf = state.command_buffers.take();
    let mut data_buf: Option<PoolBuf> = None;
    let mut auth_failures = 0u32;
    loop {
        match sess.process() {
            Step::NeedInput => {
                if !flush(
                    &state,
                    (peer, local),
                    &mut conn,
                    &mut sess,
                    inbound.idle_time,
                )
                .await
                {
                    break;
                }
                if state.force.is_fired() || (state.closing.is_fired() && !sess.in_transaction()) {
                    sess.shutdown();
                    continue;
                }
                if sess.in_data() {
                    data_buf.get_or_insert_with(|| state.data_buffers.take());
                } else {
                    data_buf = None;
                }
                let buf: &mut [u8] = match data_buf.as_mut() {
                    Some(b) => b,
                    None => &mut command_buf,
                };
                let deadline = sess.deadline(Instant::now());
                match read(&state, &mut conn, buf, deadline, sess.in_transaction()).await {
                    Wake::Data(Ok(0)) | Wake::Data(Err(_)) => break,
                    Wake::Data(Ok(n)) => {
                        // A full spool is told at MAIL and RCPT, before a body.
                        sess.refuse_mail((!state.intake.takes_mail()).then(spool_full_reply));
                        sess.feed(&buf[..n]);
                    }
                    Wake::Timeout => {
                        sess.expire(Instant::now());
                    }
                    Wake::Shutdown => sess.shutdown(),
                }
            }
            Step::Authenticate { user, password, .. } => {
                let peer = AuthPeer {
                    ip,
                    inbound,
                    session_failures: &mut auth_failures,
                };
                authenticate(&state, listener, peer, &mut sess, user, password).await;
            }
            Step::StartTls => {
                if !flush(
                    &state,
                    (peer, local),
                    &mut conn,
                    &mut sess,
                    inbound.idle_time,
                )
                .await
                {
                    break;
                }
                let Some(tls) = &listener.tls else { break };
                let handshake = conn.accept_tls(state.tls.server(&tls.server));
                match with_timeout(inbound.idle_time, handshake).await {
                    Some(Ok(())) => sess.tls_started(),
                    Some(Err(e)) => {
                        log::info!("shard {}: TLS handshake with {ip} failed: {e}", state.shard);
                        break;
                    }
                    None => break,
                }
            }
            // Not asked for (`confirm_recipients` is off); accept if it comes.
            Step::Recipient(_) => sess.recipient_checked(None),
            Step::Message(msg) => {
                let (envelope, body) = *msg;
                let arrival = Arrival {
                    peer,
                    local,
                    tls: sess.is_tls(),
                    hostname: &config.hostname,
                };
                let result = state.intake.receive(arrival, envelope, body).await;
                sess.message_stored(result.map(|id| id.to_string()));
            }
            Step::Close => {
                flush(
                    &state,
                    (peer, local),
                    &mut conn,
                    &mut sess,
                    inbound.idle_time,
                )
                .await;
                break;
            }
        }
    }
    conn.close().await;
    let (input, output) = sess.into_buffers();
    state.line_buffers.give(input);
    state.line_buffers.give(output);
}

/// Who is authenticating, for the failed-AUTH accounting.
struct AuthPeer<'a> {
    ip: IpAddr,
    inbound: &'a Inbound,
    /// Failed AUTHs so far in this session.
    session_failures: &'a mut u32,
}

/// Answers `Step::Authenticate`. An address over its failure budget
/// (counting checks in flight from its other sessions) is refused (421)
/// without a password check; otherwise the password is checked, and a
/// failure waits `failure_delay` before its 535 so that guessing costs the
/// client time, not just the server.
async fn authenticate(
    state: &ShardInbound,
    listener: &Listener,
    peer: AuthPeer<'_>,
    sess: &mut ServerSession,
    user: String,
    password: String,
) {
    let (ip, inbound) = (peer.ip, peer.inbound);
    let budget = inbound.auth_failures_per_ip;
    // The owner shard of the address counts for every shard. Should it not
    // answer (it is stopping), the check goes ahead: the per-session wait
    // still applies.
    let verdict = match state
        .auth
        .ask_owner(&ip, AuthAsk::Begin { ip, budget })
        .await
    {
        Ok(AuthAnswer::Verdict(v)) => v,
        _ => Verdict::Allowed,
    };
    if let Verdict::OverBudget { failures, first } = verdict {
        if first {
            log::warn!(
                "shard {}: AUTH refused for {ip}: {failures} failed or pending AUTHs \
                 within {}s (auth_failures_per_ip, counted host-wide)",
                state.shard,
                inbound.auth_failure_window.as_secs()
            );
        }
        sess.auth_refused_too_many_failures();
        return;
    }
    // Password hashing costs thousands of rounds: off the shard.
    let ok = match listener.credentials.clone() {
        Some(creds) => {
            let name = user.clone();
            glommio::executor()
                .spawn_blocking(move || creds.verify(&name, &password))
                .await
        }
        None => false,
    };
    let window = inbound.auth_failure_window;
    let finish = AuthAsk::Finish {
        ip,
        window,
        failed: !ok,
    };
    let n = match state.auth.ask_owner(&ip, finish).await {
        Ok(AuthAnswer::Failures(n)) => n,
        _ => 0,
    };
    if !ok {
        *peer.session_failures += 1;
        log::info!(
            "shard {}: AUTH failed for {user:?} from {ip} ({n} from it within {}s)",
            state.shard,
            window.as_secs()
        );
        let wait = failure_delay(
            *peer.session_failures,
            inbound.auth_failure_delay,
            inbound.auth_failure_max_delay,
        );
        if !wait.is_zero() {
            future::or(glommio::timer::sleep(wait), state.force.wait()).await;
        }
    }
    sess.auth_result(ok);
}

fn spool_full_reply() -> Reply {
    Reply::new(
        452,
        "4.3.1",
        "Insufficient system storage: spool full, try again later",
    )
}

/// Writes pending replies; false when the client is gone or stalled.
async fn flush(
    state: &ShardInbound,
    (peer, local): (Option<SocketAddr>, Option<SocketAddr>),
    conn: &mut Conn,
    sess: &mut ServerSession,
    limit: Duration,
) -> bool {
    for (phase, reply) in sess.take_rejections() {
        state.events.emit(Event::Rejection {
            phase,
            code: reply.code,
            reply: reply.lines.first().map_or("", |l| l.as_str()),
            peer,
            local,
        });
    }
    if !sess.has_output() {
        return true;
    }
    // Written from the session's buffer, which keeps its capacity.
    let written = with_timeout(limit, conn.write_all(sess.output())).await;
    sess.clear_output();
    matches!(written, Some(Ok(())))
}

/// Reads until data, `deadline` (none = no timer), or shutdown.
async fn read(
    state: &ShardInbound,
    conn: &mut Conn,
    buf: &mut [u8],
    deadline: Option<Instant>,
    in_transaction: bool,
) -> Wake {
    // Data already there (a pipelined command, the rest of a body) needs no
    // timer and no shutdown waiters.
    let mut reading = std::pin::pin!(conn.read(buf));
    if let Some(read) = future::poll_once(reading.as_mut()).await {
        return Wake::Data(read);
    }
    let stop = async {
        if in_transaction {
            state.force.wait().await
        } else {
            future::or(state.force.wait(), state.closing.wait()).await
        }
        Wake::Shutdown
    };
    let timer = async {
        match deadline {
            Some(at) => glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await,
            None => future::pending::<()>().await,
        }
        Wake::Timeout
    };
    future::or(async { Wake::Data(reading.await) }, future::or(stop, timer)).await
}
