//! The epoll driver: a tokio `current_thread` runtime on one pinned core thread, carrying that
//! core's [`Core`]. For kernels and container runtimes where io_uring is missing or blocked.
//!
//! Everything here lives on the one core thread (`Rc`/`RefCell`, a `LocalSet`): one task per
//! connection, one accept loop, one ticker (metrics publication, shutdown check). Connection
//! buffers are pooled and reused, so a warm keep-alive connection allocates nothing per request.
//! Reads: with `bidding.rx_timestamps` (the default) the listener has `SO_TIMESTAMPNS` (accepted
//! sockets inherit it) and each read is a non-blocking `recvmsg(2)` on the raw fd once tokio
//! says the socket is readable, so the connection carries the kernel's receive stamp to the
//! core ([`crate::rxtime`]); otherwise a plain read, and requests count from their read.
//! Must never: share state with another core, or block the thread outside the runtime.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

use super::LoopConfig;
use crate::core::{Conn, Core};
use crate::metrics::CloseReason;

struct State {
    core: RefCell<Core>,
    pool: RefCell<Vec<Conn>>,
    open: Cell<usize>,
    draining: Cell<bool>,
    /// Said once: a read carried no kernel receive stamp.
    warned_unstamped: Cell<bool>,
    notify: Notify,
    lc: LoopConfig,
}

/// Runs the core until shutdown is requested and its connections are drained.
pub fn run(
    core: Core,
    listener: TcpListener,
    lc: LoopConfig,
    shutdown: Arc<AtomicBool>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(core, listener, lc, shutdown))
}

async fn serve(
    core: Core,
    listener: TcpListener,
    lc: LoopConfig,
    shutdown: Arc<AtomicBool>,
) -> io::Result<()> {
    let mut lc = lc;
    if lc.rx_timestamps {
        use std::os::fd::AsRawFd;
        if let Err(e) = crate::rxtime::enable(listener.as_raw_fd()) {
            tracing::warn!(error = %e,
                "SO_TIMESTAMPNS refused on the listener: requests count their age from the read");
            lc.rx_timestamps = false;
        }
    }
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let st = Rc::new(State {
        core: RefCell::new(core),
        pool: RefCell::new(Vec::with_capacity(lc.max_conns)),
        open: Cell::new(0),
        draining: Cell::new(false),
        warned_unstamped: Cell::new(false),
        notify: Notify::new(),
        lc,
    });
    let mut tick = tokio::time::interval(st.lc.tick);
    let mut next_publish = Instant::now();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let mut core = st.core.borrow_mut();
                    let m = core.metrics_mut();
                    m.connections_accepted += 1;
                    m.connections_open += 1;
                    if st.open.get() >= st.lc.max_conns {
                        m.closed(CloseReason::TooManyConnections);
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    st.open.set(st.open.get() + 1);
                    tokio::task::spawn_local(conn_task(st.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= next_publish {
                    st.core.borrow_mut().publish();
                    next_publish = now + st.lc.publish;
                }
                if shutdown.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    // Graceful shutdown: stop accepting, let in-flight requests finish, close idle connections.
    drop(listener);
    st.draining.set(true);
    st.core.borrow_mut().set_draining();
    st.notify.notify_waiters();
    let deadline = Instant::now() + st.lc.drain;
    while st.open.get() > 0 && Instant::now() < deadline {
        tick.tick().await;
        st.notify.notify_waiters();
        st.core.borrow_mut().publish();
    }
    if st.open.get() > 0 {
        tracing::warn!(open = st.open.get(), "drain timeout: closing connections");
    }
    let mut core = st.core.borrow_mut();
    core.publish();
    core.flush_events();
    Ok(())
}

async fn conn_task(st: Rc<State>, mut stream: TcpStream) {
    let conn = st.pool.borrow_mut().pop();
    let mut conn = conn.unwrap_or_else(|| st.core.borrow().new_conn());
    let why = serve_conn(&st, &mut stream, &mut conn).await;
    if conn.wants_close() {
        linger(&st, &mut stream).await;
    }
    drop(stream);
    conn.reset();
    {
        let mut pool = st.pool.borrow_mut();
        if pool.len() < st.lc.max_conns {
            pool.push(conn);
        }
    }
    st.open.set(st.open.get() - 1);
    st.core.borrow_mut().metrics_mut().closed(why);
}

/// After our last answer: send FIN, then read and discard what the client still sends until it
/// closes or `linger` passes, so that the answer is not lost to a reset.
async fn linger(st: &State, stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let until = Instant::now() + st.lc.linger;
    let mut sink = [0u8; 1024];
    while let Ok(Ok(n)) = timeout_at(until, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
}

async fn serve_conn(st: &State, stream: &mut TcpStream, conn: &mut Conn) -> CloseReason {
    let mut pending_since: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        if !conn.out.is_empty() {
            if stream.write_all(&conn.out).await.is_err() {
                return CloseReason::IoError;
            }
            st.core.borrow_mut().metrics_mut().bytes_out += conn.out.len() as u64;
            conn.out.clear();
        }
        if conn.wants_close() {
            return conn.close_reason();
        }
        if conn.has_pending_input() {
            // Requests held back by backpressure (or a partial one: parsing it again is cheap).
            let mut core = st.core.borrow_mut();
            core.begin_turn();
            core.on_input(conn);
            drop(core);
            if !conn.out.is_empty() {
                continue;
            }
        }
        if conn.has_pending_input() {
            pending_since.get_or_insert(last);
        } else {
            pending_since = None;
            if st.draining.get() {
                return CloseReason::Shutdown;
            }
        }
        let deadline = match pending_since {
            Some(t) => t + st.lc.slow,
            None => last + st.lc.idle,
        };
        let room = conn.input_room();
        if room == 0 {
            return CloseReason::InputOverflow;
        }
        let buf = conn.input_mut();
        if buf.capacity() - buf.len() < 4096.min(room) {
            buf.reserve(4096);
        }
        let stamps = st.lc.rx_timestamps;
        tokio::select! {
            r = timeout_at(deadline, read_stamped(stream, buf, stamps)) => match r {
                Err(_) => {
                    if pending_since.is_some() {
                        st.core.borrow_mut().timeout(conn);
                        continue;
                    }
                    return CloseReason::IdleTimeout;
                }
                Ok(Ok((0, _))) => return CloseReason::Client,
                Ok(Ok((n, rx))) => {
                    last = Instant::now();
                    conn.set_rx_stamp(rx.unwrap_or(0));
                    let mut core = st.core.borrow_mut();
                    core.metrics_mut().bytes_in += n as u64;
                    if stamps && rx.is_none() {
                        core.metrics_mut().rx_unstamped += 1;
                        if !st.warned_unstamped.replace(true) {
                            tracing::warn!(core = core.id(),
                                "a read carried no kernel receive stamp: such requests count their age from the read");
                        }
                    }
                    core.begin_turn();
                    core.on_input(conn);
                }
                Ok(Err(_)) => return CloseReason::IoError,
            },
            _ = st.notify.notified(), if !st.draining.get() => {}
        }
    }
}

/// Reads into `buf`'s spare capacity: `recvmsg` with the kernel's receive stamp when `stamps`,
/// else a plain read. `(0, _)` is EOF.
async fn read_stamped(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    stamps: bool,
) -> io::Result<(usize, Option<u64>)> {
    if !stamps {
        return stream.read_buf(buf).await.map(|n| (n, None));
    }
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    loop {
        stream.readable().await?;
        let r = stream.try_io(Interest::READABLE, || {
            crate::rxtime::recv_stamped(fd, buf.spare_capacity_mut())
        });
        match r {
            Ok((n, rx)) => {
                // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok((n, rx));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}
