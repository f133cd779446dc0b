//! The request path, top to bottom: read a head → identify → parse the
//! target → decide → resolve → vet addresses → connect → relay → log.
//! `admit` holds the policy steps in that order, one per line; `request`
//! turns the outcome into a tunnel, a forwarded exchange or a refusal
//! (refuse.rs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::{Duration, Instant};

use crate::host::Host;
use crate::identity::{Evidence, IdentityError};
use crate::policy::{AgentSlot, Policy, Verdict};
use crate::shutdown::Shutdown;
use crate::telemetry::access_log::{Entry, method_name, ms, src_text};

use super::error::ProxyError;
use super::head::{self, Head, ReadError};
use super::pool::Upstream;
use super::target::{Kind, Target};
use super::{ClientIo, State, connect, forward, relay};

mod refuse;

/// One client connection.
pub struct Conn<S> {
    state: Arc<State>,
    peer: SocketAddr,
    /// `peer` as the access log's `src` field, formatted once.
    src: Arc<str>,
    stream: S,
    buf: BytesMut,
    /// The verified client certificate's SPIFFE ID (TLS listener only).
    spiffe: Option<String>,
    /// This connection's place in its agent's connection limit.
    slot: Option<AgentSlot>,
    /// When sluice drains, finish the request in hand and take no more.
    /// `serve` runs inside the shutdown's guard (see `Shutdown::drain_begun`).
    shutdown: Arc<Shutdown>,
}

/// A request the policy has let through, with its vetted addresses.
struct Admitted {
    target: Target,
    ips: Arc<[IpAddr]>,
    agent: usize,
}

/// Whether a forwarded request may be sent again after its upstream failed
/// before answering: a safe method (RFC 9110 §9.2.1) and no body.
fn retriable(head: &Head, target: &Target) -> bool {
    matches!(head.method(), "GET" | "HEAD" | "OPTIONS")
        && matches!(
            target.kind,
            Kind::Forward {
                body: super::target::Framing::None,
                ..
            }
        )
}

/// The agent's rules on the target: allow, report (let through, logged as
/// a would-be denial) or deny.
fn decide(
    policy: &Policy,
    agent: usize,
    target: &Target,
    log: &mut Entry,
) -> Result<(), ProxyError> {
    let decision = policy.decide(agent, &target.host, target.port, SystemTime::now());
    log.record.rule = decision.rule;
    match decision.verdict {
        Verdict::Allow => log.record.decision = "allow",
        Verdict::Report(why) => {
            log.record.decision = "report";
            log.record.reason = Some(why.as_str());
        }
        Verdict::Deny(why) => return Err(ProxyError::Denied(why)),
    }
    Ok(())
}

impl<S: ClientIo> Conn<S> {
    pub fn new(
        state: Arc<State>,
        stream: S,
        peer: SocketAddr,
        spiffe: Option<String>,
        shutdown: Arc<Shutdown>,
    ) -> Self {
        Conn {
            state,
            peer,
            src: src_text(peer),
            stream,
            buf: BytesMut::new(),
            spiffe,
            slot: None,
            shutdown,
        }
    }

    /// Serves requests until the client closes, a request cannot be
    /// followed by another, or the connection becomes a tunnel. Runs inside
    /// `Shutdown::guard`, which wakes it when sluice drains.
    pub async fn serve(mut self) {
        let mut first = true;
        loop {
            let policy = self.state.policy();
            let limits = &policy.config.limits;
            let now = Instant::now();
            // A new connection must send its head within head_timeout; a
            // kept-alive one may idle like a tunnel before its next request.
            let first_byte = if first {
                now + limits.head_timeout
            } else {
                now + policy.config.egress.idle_timeout
            };
            let deadline = if first {
                first_byte
            } else {
                first_byte + limits.head_timeout
            };
            let read = head::read(
                &mut self.stream,
                &mut self.buf,
                limits.head_size,
                first_byte,
                deadline,
            );
            let head = match if first {
                read.await
            } else {
                // Between requests a draining proxy closes the connection
                // rather than wait for a request it would have to refuse.
                tokio::select! {
                    r = read => r,
                    () = self.shutdown.drain_begun() => return,
                }
            } {
                Ok(head) => head,
                Err(ReadError::Closed | ReadError::Io(_)) => return,
                Err(e) => return self.bad_head(&policy, e).await,
            };
            first = false;
            if !self.request(&policy, head).await {
                return;
            }
        }
    }

    /// A head that could not be read: 400 or 431, or silence on a timeout.
    async fn bad_head(mut self, policy: &Policy, e: ReadError) {
        let mut log = Entry::new(&self.state.log, self.src.clone());
        if let Some(id) = self.agent_hint(policy) {
            log.record.agent = Some(policy.agent(id).name.clone());
        }
        let err = match e {
            ReadError::TooLarge => ProxyError::HeadTooLarge,
            ReadError::Malformed(m) => ProxyError::Malformed(m),
            _ => {
                // Slow or stalled clients get no answer: the connection is
                // closed, and the log says why.
                log.record.reason = Some("head_timeout");
                log.finish().await;
                return;
            }
        };
        self.refuse_in_place(policy, err, log, None).await;
    }

    /// The agent a connection belongs to before any head is understood:
    /// its certificate or source (never a token: there is no valid head).
    fn agent_hint(&self, policy: &Policy) -> Option<usize> {
        policy
            .identities
            .identify(&Evidence {
                peer: self.peer.ip(),
                spiffe_id: self.spiffe.as_deref(),
                proxy_authorization: None,
            })
            .ok()
            .map(|i| i.agent)
    }

    /// Handles one request; returns whether the connection may carry another.
    async fn request(&mut self, policy: &Policy, head: Head) -> bool {
        let mut log = Entry::new(&self.state.log, self.src.clone());
        log.record.method = Some(method_name(head.method()));
        match self.admit(policy, &head, &mut log).await {
            Err(e) => {
                let rule = log.record.rule.clone();
                self.refuse_in_place(policy, e, log, rule.as_deref()).await;
                false
            }
            Ok(admitted) => match admitted.target.kind {
                Kind::Connect => {
                    // The head's buffer would otherwise live as long as the tunnel.
                    drop(head);
                    self.tunnel(policy, admitted, log).await;
                    false
                }
                // Boxed: the exchange's future is the largest state of a
                // connection's task, and unboxed it would size every
                // connection, idle tunnels included, by that much.
                Kind::Forward { .. } => Box::pin(self.forward(policy, &head, admitted, log)).await,
            },
        }
    }

    /// identify → parse → decide → resolve → vet, recording each step.
    async fn admit(
        &mut self,
        policy: &Policy,
        head: &Head,
        log: &mut Entry,
    ) -> Result<Admitted, ProxyError> {
        let agent = self.identify(policy, head, log)?;
        let target = Target::parse(head).map_err(ProxyError::Malformed)?;
        self.record_target(policy, &target, log);
        decide(policy, agent, &target, log)?;
        let ips = self.resolve(&target, log).await?;
        let ips = policy.vet(&ips).map_err(ProxyError::Denied)?;
        Ok(Admitted { target, ips, agent })
    }

    /// Who is calling, from the connection's certificate or source or the
    /// head's token; takes the connection's place in that agent's limit.
    fn identify(
        &mut self,
        policy: &Policy,
        head: &Head,
        log: &mut Entry,
    ) -> Result<usize, ProxyError> {
        let auth = head
            .get_one("proxy-authorization")
            .map_err(|_| ProxyError::Identity(IdentityError::BadCredentials))?;
        let evidence = Evidence {
            peer: self.peer.ip(),
            spiffe_id: self.spiffe.as_deref(),
            proxy_authorization: auth,
        };
        let who = policy
            .identities
            .identify(&evidence)
            .map_err(ProxyError::Identity)?;
        let agent = policy.agent(who.agent);
        log.record.agent = Some(agent.name.clone());
        log.series = Some(agent.series(&self.state.metrics));
        log.record.identity = Some(who.method.as_str());
        log.record.mode = Some(agent.mode.as_str());
        // The connection counts against the agent its requests come from;
        // a token can make a later request another agent's.
        if self.slot.as_ref().is_none_or(|s| s.agent() != &*agent.name) {
            self.slot = None;
            self.slot = Some(
                policy
                    .acquire(who.agent)
                    .ok_or(ProxyError::ConnectionLimit)?,
            );
        }
        Ok(who.agent)
    }

    /// The target's addresses: the literal one, or the resolver's answer
    /// (timed, counted, and logged whole, forbidden addresses included).
    async fn resolve(&self, target: &Target, log: &mut Entry) -> Result<Arc<[IpAddr]>, ProxyError> {
        let name = match &target.host {
            Host::Ip(ip) => return Ok(Arc::from([*ip])),
            Host::Name(name) => name,
        };
        let m = &self.state.metrics;
        let started = Instant::now();
        let resolved = self.state.resolver.resolve(name).await;
        // Every lookup is observed, failed ones too: the histogram's count
        // is the denominator of the DNS error rate.
        let took = started.elapsed();
        m.dns_lookup.observe(took.as_secs_f64());
        log.record.dns_ms = Some(ms(took));
        match resolved {
            Ok(ips) => {
                log.record.ips = Some(ips.clone());
                Ok(ips)
            }
            Err(e) => {
                m.dns_errors.with_label_values(&[e.kind()]).inc();
                Err(ProxyError::Dns(e))
            }
        }
    }

    fn record_target(&self, policy: &Policy, target: &Target, log: &mut Entry) {
        log.record.host = Some(match &target.host {
            Host::Name(n) => n.as_str().to_owned(),
            Host::Ip(ip) => ip.to_string(),
        });
        log.record.port = Some(target.port);
        log.record.path = target.kind.path().map(str::to_owned);
        if policy.config.log.include_query {
            log.record.query = target.kind.query().map(str::to_owned);
        }
    }

    /// CONNECT: dial, answer 200, relay through the SNI gate until done.
    async fn tunnel(&mut self, policy: &Policy, a: Admitted, mut log: Entry) {
        let egress = &policy.config.egress;
        let upstream = match self.dial(&a, egress.connect_timeout, &mut log).await {
            Ok(c) => c.stream,
            Err(e) => return self.refuse_in_place(policy, e, log, None).await,
        };
        if let Err(e) = self
            .stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
        {
            tracing::debug!(peer = %self.peer, "client went away before the tunnel opened: {e}");
            log.record.status = Some(200);
            log.record.bytes_up = Some(0);
            log.record.bytes_down = Some(0);
            return log.finish().await;
        }
        log.record.status = Some(200);
        let agent = policy.agent(a.agent);
        let series = agent.series(&self.state.metrics);
        series.tunnels.inc();
        let opts = relay::Options {
            idle_timeout: egress.idle_timeout,
            sni_host: &a.target.host,
            require_sni: agent.require_sni,
            allow_ech: agent.allow_ech,
        };
        let pending = std::mem::take(&mut self.buf);
        let out = relay::tunnel(&mut self.stream, pending, upstream, &opts).await;
        series.tunnels.dec();
        log.record.bytes_up = Some(out.bytes_up);
        log.record.bytes_down = Some(out.bytes_down);
        log.record.sni = out.sni;
        log.record.ech = out.ech.then_some(true);
        match out.end {
            relay::End::Refused(reason) => {
                log.record.decision = "deny";
                log.record.reason = Some(reason);
            }
            relay::End::Error(e) => tracing::debug!(peer = %self.peer, "tunnel ended: {e}"),
            relay::End::Closed | relay::End::Idle => {}
        }
        log.finish().await;
    }

    /// Absolute-form: reuse or dial an upstream, forward, keep both
    /// connections when their framing allows.
    async fn forward(&mut self, policy: &Policy, head: &Head, a: Admitted, mut log: Entry) -> bool {
        let agent = &policy.agent(a.agent).name;
        let (up, result) = match self.exchange(policy, head, &a, agent, &mut log).await {
            Ok(sent) => sent,
            Err(e) => {
                self.refuse_in_place(policy, e, log, None).await;
                return false;
            }
        };
        match result {
            Ok(f) => {
                // Pooled before the line is logged: whoever has seen the
                // line can count on the connection being there.
                if f.upstream_reusable {
                    let pool = &self.state.upstreams;
                    pool.put(agent, &a.target.host, a.target.port, up);
                }
                log.record.status = Some(f.status);
                log.record.bytes_up = Some(f.bytes_up);
                log.record.bytes_down = Some(f.bytes_down);
                log.finish().await;
                f.client_reusable
            }
            Err(e) => match ProxyError::from_forward(e) {
                Ok(refusal) => {
                    // Nothing has come back to the client: it can be told
                    // why. The upstream (failed, or holding a partial
                    // request) is closed first, not kept through the
                    // refusal's linger.
                    drop(up);
                    tracing::debug!(peer = %self.peer, "forward failed: {refusal}");
                    self.refuse_in_place(policy, refusal, log, None).await;
                    false
                }
                Err(forward::ForwardError::ClientBody { why, .. }) => {
                    // Logged as the refusal it would have been; only
                    // closing is left.
                    let e = ProxyError::Malformed(why);
                    log.record.decision = e.decision();
                    log.record.reason = Some(e.reason());
                    tracing::debug!(peer = %self.peer, "bad request body after the response began: {why}");
                    log.finish().await;
                    false
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, "relay broken: {e}");
                    log.finish().await;
                    false
                }
            },
        }
    }

    /// One exchange with the origin, on a pooled connection if the agent
    /// has one there, else on a new one (a failed dial is the refusal).
    ///
    /// A kept-alive upstream may close just as it is reused. A safe request
    /// without a body has then reached no one intact and consumed nothing
    /// from the client: it is sent once more on a fresh connection.
    async fn exchange(
        &mut self,
        policy: &Policy,
        head: &Head,
        a: &Admitted,
        agent: &Arc<str>,
        log: &mut Entry,
    ) -> Result<(Upstream, Result<forward::Forwarded, forward::ForwardError>), ProxyError> {
        let egress = &policy.config.egress;
        let opts = forward::Options {
            idle_timeout: egress.idle_timeout,
        };
        let mut pooled = self
            .state
            .upstreams
            .take(agent, &a.target.host, a.target.port, &a.ips);
        loop {
            let reused = pooled.is_some();
            let mut up = match pooled.take() {
                Some(p) => {
                    log.record.ip = Some(p.addr.ip());
                    p
                }
                None => {
                    let c = self.dial(a, egress.connect_timeout, log).await?;
                    Upstream {
                        stream: c.stream,
                        addr: c.addr,
                        buf: BytesMut::new(),
                    }
                }
            };
            let result = forward::forward(
                &mut self.stream,
                &mut self.buf,
                head,
                &a.target,
                &mut up.stream,
                &mut up.buf,
                opts,
            )
            .await;
            let stale = matches!(result, Err(forward::ForwardError::Upstream(_)));
            if !(reused && stale && retriable(head, &a.target)) {
                return Ok((up, result));
            }
        }
    }

    /// Connects to the first vetted address that answers, recording it.
    async fn dial(
        &self,
        a: &Admitted,
        timeout: Duration,
        log: &mut Entry,
    ) -> Result<connect::Connected, ProxyError> {
        match connect::first(&a.ips, a.target.port, timeout).await {
            Ok(c) => {
                self.state
                    .metrics
                    .upstream_connect
                    .observe(c.elapsed.as_secs_f64());
                log.record.ip = Some(c.addr.ip());
                log.record.connect_ms = Some(ms(c.elapsed));
                Ok(c)
            }
            Err((e, ip)) => {
                log.record.ip = ip;
                Err(e)
            }
        }
    }
}
