//! Kernel receive timestamps: when a request's bytes reached the socket, not when the loop read
//! them. Under overload requests wait in the kernel's socket buffers; only the kernel's stamp
//! shows that wait, so the deadline and the shedding in [`crate::admission`] count from it.
//!
//! [`enable`] turns `SO_TIMESTAMPNS` on for an accepted socket (once, at accept); the drivers
//! then receive with `recvmsg` (the io_uring driver: a `RECVMSG` multishot with provided
//! buffers; the epoll driver: `recvmsg(2)` on the raw fd) and hand the control data to
//! [`parse`], which returns the stamp in Unix nanoseconds (`CLOCK_REALTIME`). For TCP the stamp
//! is the one of the last segment the read took (`tcp_recv_timestamp`): the moment the request
//! became complete, so its age is the time it waited ready in the queue. The loop converts the
//! realtime stamp to its own clock once per turn (the core's turn start carries both clocks).
//!
//! Called per read on the core's thread: no allocation, no syscall (parsing is pointer
//! arithmetic over the control bytes). Must never: trust the control bytes' lengths beyond the
//! buffer, or treat a missing stamp as an old one (missing = 0 = "read time").

use std::io;

/// Control-message space a receive needs for one `SCM_TIMESTAMPNS` (`CMSG_SPACE(timespec)`).
pub const CONTROL_LEN: usize = cmsg_space(std::mem::size_of::<libc::timespec>());

const fn cmsg_space(len: usize) -> usize {
    let align = std::mem::size_of::<usize>();
    let hdr = (std::mem::size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    hdr + ((len + align - 1) & !(align - 1))
}

/// Turns on software receive timestamps (`SO_TIMESTAMPNS`) for `fd`. An error means the kernel
/// will not stamp (the caller falls back to read time and says so once).
pub fn enable(fd: i32) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: plain setsockopt(2) on our socket with a c_int option value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The receive stamp in `control` (the control bytes a `recvmsg` returned), Unix ns; `None`
/// when there is none (or it is malformed).
pub fn parse(control: &[u8]) -> Option<u64> {
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<usize>();
    let mut at = 0usize;
    while at + hdr <= control.len() {
        // SAFETY: `at + hdr` ≤ len: the header is within the slice; read unaligned (a provided
        // buffer's control area carries no alignment promise).
        let h: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().add(at).cast()) };
        let len = h.cmsg_len;
        if len < hdr || at + len > control.len() {
            return None;
        }
        if h.cmsg_level == libc::SOL_SOCKET
            && h.cmsg_type == libc::SCM_TIMESTAMPNS
            && len - hdr >= std::mem::size_of::<libc::timespec>()
        {
            // SAFETY: the payload (a timespec) lies within `at + len` ≤ the slice's length.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(control.as_ptr().add(at + hdr).cast()) };
            if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
                return None;
            }
            return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
        }
        at += (len + align - 1) & !(align - 1);
    }
    None
}

/// One `recvmsg(2)` into `dst` (non-blocking socket: `WouldBlock` when empty), returning the
/// bytes read and the receive stamp if the kernel gave one. For the epoll driver (the io_uring
/// driver receives with a `RECVMSG` multishot instead).
pub fn recv_stamped(
    fd: i32,
    dst: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<(usize, Option<u64>)> {
    let mut control = [0u8; CONTROL_LEN];
    let mut iov = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_LEN as _;
    // SAFETY: `msg` points at `iov` (over `dst`) and `control`, both live for the call and of
    // the lengths given; the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let clen = (msg.msg_controllen as usize).min(CONTROL_LEN);
    Ok((n as usize, parse(&control[..clen])))
}

/// Checks that this kernel stamps TCP on loopback and hands the stamp to `recvmsg`, waiting up
/// to `within` (turning stamps on is deferred in the kernel: the first segments after the first
/// socket asks may go unstamped). Start-up only: makes sockets and sleeps.
pub fn probe(within: std::time::Duration) -> bool {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return false;
    };
    if enable(l.as_raw_fd()).is_err() {
        return false;
    }
    let Ok(mut c) = l.local_addr().and_then(std::net::TcpStream::connect) else {
        return false;
    };
    let Ok((s, _)) = l.accept() else {
        return false;
    };
    let until = std::time::Instant::now() + within;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16];
    loop {
        if c.write_all(b"x").is_err() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        if let Ok((n, Some(_))) = recv_stamped(s.as_raw_fd(), &mut buf)
            && n > 0
        {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(8));
    }
}

/// A stamp older than this at read is treated as a clock step (NTP), not as queueing: the
/// request counts from its read time instead.
pub const MAX_PLAUSIBLE_AGE_NS: u64 = 10_000_000_000;

/// How long the bytes stamped `rx_unix_ns` had waited at `now_unix_ns` (both realtime); zero
/// when there is no stamp, when it lies in the future (clock step) or is implausibly old.
pub fn age_ns(rx_unix_ns: u64, now_unix_ns: u64) -> u64 {
    if rx_unix_ns == 0 || rx_unix_ns >= now_unix_ns {
        return 0;
    }
    let age = now_unix_ns - rx_unix_ns;
    if age > MAX_PLAUSIBLE_AGE_NS { 0 } else { age }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn unix_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    fn cmsg(level: i32, ty: i32, payload: &[u8]) -> Vec<u8> {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut v = vec![0u8; cmsg_space(payload.len())];
        // SAFETY: test-only construction of a cmsghdr in a buffer big enough for it.
        let mut h: libc::cmsghdr = unsafe { std::mem::zeroed() };
        h.cmsg_len = hdr + payload.len();
        h.cmsg_level = level;
        h.cmsg_type = ty;
        // SAFETY: `v` holds at least `hdr` bytes.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast(), h) };
        v[hdr..hdr + payload.len()].copy_from_slice(payload);
        v
    }

    fn ts_bytes(sec: i64, nsec: i64) -> Vec<u8> {
        // SAFETY: timespec is plain data.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        t.tv_sec = sec;
        t.tv_nsec = nsec;
        let mut v = vec![0u8; std::mem::size_of::<libc::timespec>()];
        // SAFETY: `v` has the size of a timespec.
        unsafe { std::ptr::write_unaligned(v.as_mut_ptr().cast(), t) };
        v
    }

    #[test]
    fn parses_the_stamp_and_skips_other_messages() {
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[1, 2, 3, 4]);
        c.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &ts_bytes(1_700_000_000, 123),
        ));
        assert_eq!(parse(&c), Some(1_700_000_000_000_000_123));
        assert_eq!(
            parse(&cmsg(
                libc::SOL_SOCKET,
                libc::SCM_TIMESTAMPNS,
                &ts_bytes(1, 0)
            ))
            .unwrap(),
            1_000_000_000
        );
    }

    #[test]
    fn refuses_malformed_control_data() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0u8; 7]), None);
        let mut c = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts_bytes(5, 0));
        // A length past the buffer.
        c[0] = 200;
        assert_eq!(parse(&c), None);
        // A length below the header.
        c[0] = 1;
        assert_eq!(parse(&c), None);
        // A nanosecond field out of range, a negative second.
        let c = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &ts_bytes(5, 1_000_000_000),
        );
        assert_eq!(parse(&c), None);
        let c = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts_bytes(-1, 0));
        assert_eq!(parse(&c), None);
        // Truncated: the header says 32 bytes, 20 are there.
        let c = cmsg(libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS, &ts_bytes(5, 0));
        assert_eq!(parse(&c[..20]), None);
    }

    #[test]
    fn age_ignores_missing_future_and_implausible_stamps() {
        assert_eq!(age_ns(0, 5_000), 0);
        assert_eq!(age_ns(6_000, 5_000), 0);
        assert_eq!(age_ns(4_000, 5_000), 1_000);
        let now = 100 * MAX_PLAUSIBLE_AGE_NS;
        assert_eq!(age_ns(now - MAX_PLAUSIBLE_AGE_NS - 1, now), 0);
        assert_eq!(
            age_ns(now - MAX_PLAUSIBLE_AGE_NS, now),
            MAX_PLAUSIBLE_AGE_NS
        );
    }

    /// This kernel stamps TCP on loopback and returns the stamp to a plain `recvmsg`; a
    /// request that sat 30 ms in the socket buffer is seen 30 ms old.
    #[test]
    fn tcp_recvmsg_returns_the_kernel_stamp() {
        assert!(
            probe(Duration::from_secs(2)),
            "this kernel stamps TCP on loopback"
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        enable(s.as_raw_fd()).unwrap();
        let sent = unix_ns();
        c.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let mut data = [std::mem::MaybeUninit::<u8>::uninit(); 64];
        let (n, rx) = recv_stamped(s.as_raw_fd(), &mut data).unwrap();
        let read_at = unix_ns();
        assert_eq!(n, 5);
        let rx = rx.expect("the kernel stamped the segment");
        assert!(rx >= sent && rx <= read_at, "{sent} ≤ {rx} ≤ {read_at}");
        let age = age_ns(rx, read_at);
        assert!(age >= 29_000_000, "waited {age} ns in the socket buffer");
        let mut rest = [0u8; 1];
        drop(c);
        let mut s = s;
        assert_eq!(s.read(&mut rest).unwrap(), 0);
    }
}
