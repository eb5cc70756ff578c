//! Every default and bound of popgate's operation, in one place, each with why: what a config
//! leaves unset, and the fixed caps of the layers above (network, data plane, admin). Protocol
//! facts private to one parser stay beside it, and the identity and certificate layers, which
//! sit below config, keep their own (response and file size caps).

use std::time::Duration;

// --- timeouts a route or the top level can set ---

/// Default TCP + TLS connect timeout of an upstream: long enough for a cross-region handshake,
/// short enough that a black-holed upstream fails while the caller is still waiting.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time until the upstream's response head: Azure control-plane calls (Graph batch calls)
/// can take tens of seconds; a minute covers them without holding callers forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default idle time of a pooled upstream connection: just under the 100 s–4 min idle cut-offs
/// of Azure front ends, so popgate closes first and never writes into a dead socket.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default time open connections get to finish in-flight requests after shutdown is asked for;
/// below Kubernetes' default 30 s termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time popgate keeps accepting after a stop signal while `/readyz` answers 503
/// (`drain.delay`): Kubernetes removes a terminating pod from Service endpoints and load balancers
/// stop sending only after a few seconds (kube-proxy / endpoint propagation); 5 s covers that, and
/// delay plus [`DEFAULT_DRAIN_TIMEOUT`] (25 s) stays below the default 30 s grace period.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Longest timeout a config may set: a day; anything longer is a typo (`5000m` for `5000ms`).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

// --- caller-facing HTTP limits (`limits:`) ---

/// Default cap on request header lines: hyper's own default, generous for API clients (which send
/// around 10–20) and small enough that a header flood costs little to parse.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default cap on the request head in bytes (request line + headers): far above what a token-less
/// legacy app sends (popgate adds the token itself), and the same as nginx's largest default buffer.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Smallest accepted `max_header_bytes`: hyper's h1 read buffer cannot be smaller than 8 KiB.
pub const MIN_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default cap on the request target: 8 KiB is the limit most front ends (nginx, Azure Front Door)
/// enforce, so a longer URI would fail upstream anyway.
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Default cap on open caller connections per listener: a node's legacy apps hold tens to a few
/// hundred; 1024 leaves room for upstream sockets within the usual 65536 file-descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time a caller's HTTP/1 connection may take to send a request head. hyper starts this
/// clock when the connection is ready for the next head, so it also closes idle keep-alive
/// connections. 30 s (hyper's default) outlasts any honest client's pause between requests on a
/// pooled connection, yet stops a slowloris client trickling one header byte at a time.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time from accepting a caller connection (or finishing its TLS handshake) to its first
/// byte: an HTTP client writes its request as soon as it has connected, so a socket silent for
/// 5 s is not a client about to speak but one holding a slot (every loopback or node-local
/// caller is far faster; a cross-zone client adds milliseconds, not seconds).
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time from a caller's first byte until popgate knows its protocol: for HTTP/1 the first
/// byte that is not the HTTP/2 preface decides at once; an HTTP/2 caller must have sent the whole
/// 24-byte preface and its first SETTINGS frame, which clients write in one go with the preface.
/// hyper-util's protocol detection has no timer of its own, so without this a partial preface
/// (`PRI * HTTP/2.0\r\n`) held a slot for ever.
pub const DEFAULT_H2_PREFACE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an established caller connection may sit with no request in flight (HTTP/1
/// between requests, HTTP/2 with no open stream) before popgate closes it. Shorter than the
/// 60–90 s client pools keep idle connections (Go, reqwest, .NET): clients retry a request on a
/// keep-alive connection the server closed, while each idle connection held costs a slot. HTTP/1
/// connections are also bound by [`DEFAULT_HEADER_READ_TIMEOUT`], which hyper starts when the
/// connection is ready for the next head.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a request body may go without a byte arriving while popgate waits for it (the
/// caller declared more than it sent): an honest client keeps a body flowing, and 30 s (nginx's
/// `client_body_timeout` is 60 s) stops one that declares 64 KiB and stalls from holding its
/// read-ahead buffer, stream and upstream connection.
pub const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time popgate may wait to write to a caller that stopped reading (its socket's buffer
/// full) before closing the connection: long enough for a client pausing between reads, short
/// enough that a reader that never resumes does not pin the upstream connection it streams from.
pub const DEFAULT_RESPONSE_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default HTTP/2 streams a caller may have open at once on one connection: hyper's default
/// (200) lets one connection hold 200 upstream requests; 100 is what RFC 9113 recommends as the
/// minimum and what nginx allows.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;

// --- caller connections: fixed ---

/// Default bound on a caller's TLS handshake, from accept, so half-open connections cannot pile
/// up: a handshake is two round trips plus one signature, milliseconds for node-local callers;
/// 5 s leaves room for a loaded client host and a slow RSA key.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default streams a caller may reset before popgate accepted them (HTTP/2 rapid reset,
/// CVE-2023-44487) before the connection gets GOAWAY: the h2 crate's default, which no honest
/// client reaches.
pub const DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Default streams popgate may reset for protocol errors caused by the caller before it sends
/// GOAWAY (the "MadeYouReset" variant): hyper's default.
pub const DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Default interval of HTTP/2 PING keep-alives on an idle caller connection, to find callers
/// that vanished without closing.
pub const DEFAULT_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default time a caller has to answer a PING before its connection is closed.
pub const DEFAULT_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default permissions of the Unix socket file: owner and group may connect (connecting needs
/// write permission), others may not; widen with `mode` or narrow the group with the directory.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;
/// At most this many admin connections at once: probes and one or two scrapers need a handful;
/// a bound keeps a misbehaving client from holding many sockets.
pub const MAX_ADMIN_CONNECTIONS: usize = 32;
/// An admin client (a kubelet probe, a Prometheus scrape) writes its request right after
/// connecting; a socket silent this long holds a slot and nothing else.
pub const ADMIN_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// Prometheus keeps its scrape connection open between scrapes (15–60 s apart) and reconnects
/// when it finds it closed; probes open a new connection each time. Idle admin connections are
/// closed after this, and evicted earlier when a new admin client needs the slot.
pub const ADMIN_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(30);

// --- upstream connections ---

/// Default cap on live upstream connections per host per snapshot (`upstream_pool.
/// max_connections_per_host`). Over HTTP/1.1 each connection carries one request at a time, so
/// this is how many callers one host serves at once: 128 serves a 300-caller burst on an upstream
/// answering in 1.5 s in three rounds (well within [`DEFAULT_POOL_WAIT_TIMEOUT`]) while bounding
/// the mTLS handshakes a burst can trigger and the sockets one host can hold.
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 128;
/// Default number of callers that may wait for a busy host's connection (`upstream_pool.
/// max_waiting`): as many as one listener's default caller connections
/// ([`DEFAULT_MAX_CONNECTIONS`]), so a full listener's callers queue rather than fail; beyond it
/// a caller gets 503 + `Retry-After` at once (Envoy's default `max_pending_requests` is also 1024).
pub const DEFAULT_POOL_MAX_WAITING: usize = 1024;
/// Default time a caller waits for a busy host's connection (`upstream_pool.wait_timeout`):
/// 1024 waiters served 128 at a time by a 1 s upstream wait 8 s at most; 10 s covers that and
/// still ends well before the 60 s request timeout, so the caller learns "busy, retry" (503)
/// instead of a gateway timeout.
pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// `Retry-After` (seconds) on a 503 for a busy upstream pool: connections free up as the
/// upstream answers, typically within a second, so callers should come back soon but not spin.
pub const POOL_BUSY_RETRY_AFTER_SECS: u64 = 1;
/// Most `upstream_pool.max_connections_per_host` a config may set: beyond this one host would
/// hold a large share of the usual 65536 file descriptors.
pub const MAX_POOL_CONNECTIONS_PER_HOST: u64 = 10_000;
/// Most `upstream_pool.max_waiting` a config may set: each waiter is a caller request held in
/// memory; a million is far past any node's caller count.
pub const MAX_POOL_WAITING: u64 = 1_000_000;
/// Most lanes one client spreads its requests over: each lane holds its own h2 connection and
/// its own share of the HTTP/1.1 pool, so this bounds the extra upstream connections (and mTLS
/// handshakes) per snapshot.
pub const MAX_LANES: usize = 8;
/// Past this many tracked upstream hosts, idle per-host limiters are pruned on the next dial, so a
/// wildcard route reaching many hosts cannot grow the map without bound.
pub const MAX_TRACKED_HOSTS: usize = 1024;
/// Most request-body bytes read ahead (for the 401 replay) across the whole process at once: a
/// request that cannot reserve its share streams without a replay instead. 64 MiB is 1,024 full
/// 64 KiB read-aheads, and keeps 1,024 connections x 100 HTTP/2 streams (6 GiB if each held
/// 64 KiB) from pinning more than that.
pub const MAX_READ_AHEAD_BUDGET: u64 = 64 * 1024 * 1024;
/// Request bodies up to this size are read ahead and kept, so the request can be replayed once
/// after the upstream refuses the token; larger ones stream straight through (and a refusal goes
/// back to the caller). 64 KiB covers typical API calls while bounding memory per request.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

// --- token endpoints and IMDS (not configurable) ---

/// Bound on TCP + TLS to a token endpoint or IMDS: IMDS is link-local and ESTS answers handshakes
/// in well under a second; ten seconds means the peer is unreachable, not slow. Separate from
/// [`DEFAULT_CONNECT_TIMEOUT`]: a route's `timeouts.connect` does not apply to token calls.
pub const TOKEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one whole token exchange (connect, send, read the body): ESTS's own request timeout is
/// about 30 s, and a stuck call must end while the cached token is still usable.
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections to token endpoints are closed after this: token calls come minutes
/// apart, so a longer idle time only holds sockets that the peer will cut anyway.
pub const TOKEN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most distinct binding certificates (plus the certificate-less client) with a cached token
/// client; the oldest is dropped beyond this so rotations cannot grow the map without bound.
pub const MAX_CACHED_TOKEN_CLIENTS: usize = 32;
/// Connections per token host per client: acquisitions are single-flight, so a few suffice.
pub const MAX_TOKEN_CONNECTIONS_PER_HOST: usize = 4;
/// Token calls in flight per token host and client certificate: as many as that client keeps
/// connections, so each call has a connection of its own (HTTP/1.1, e.g. IMDS) or a stream on
/// one, and no call waits on a dial (`net::token_call_gate`).
pub const MAX_TOKEN_CALLS_PER_HOST: usize = MAX_TOKEN_CONNECTIONS_PER_HOST;

/// Most data-plane worker threads (`workers:`): each has its own runtime and one listening socket
/// per TCP listener, so beyond the cores any node has, more only cost memory and descriptors.
pub const MAX_WORKERS: usize = 256;
