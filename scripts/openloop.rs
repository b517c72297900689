//! An open-loop HTTP/1.1 load generator with no dependencies: requests are
//! due at a fixed rate whatever the server does, and each one's latency is
//! measured from the moment it was due, not from when a connection was free
//! to send it, so a server that stalls is charged for every request that
//! waited behind the stall (no coordinated omission, as in wrk2).
//!
//! One thread drives C keep-alive connections through epoll (Linux): a
//! request is sent on a free connection at its due time (a timerfd wakes
//! the thread for it, to the microsecond) or, when every connection is
//! still busy, as soon as one frees up (and its latency includes the
//! wait). One thread, not one a connection: on a small machine the
//! generator shares the cores with the server, and a thread a connection
//! cost a sleep, a blocking read and two context switches per request.
//! The body is a template: `@SUBJECT@` is replaced by a subject id, a new
//! one for every request (SUBJECTS 0) or one of SUBJECTS in turn.
//!
//!     rustc --edition 2021 -O -o /tmp/openloop scripts/openloop.rs
//!     /tmp/openloop PORT PATH TEMPLATE RATE SECONDS CONNECTIONS SUBJECTS RUN [PROTOCOL]
//!
//! PROTOCOL is `http1` (the default) or `h2`: HTTP/2 over cleartext TCP
//! with prior knowledge, CONNECTIONS connections with many requests in
//! flight on each (up to the server's stream limit), everything due on a
//! connection written with one system call; the status of an HTTP/2
//! answer is read when the server sends it as an entry of HPACK's static
//! table (hyper does, for 200 and 400) or as a literal, and counted as
//! status 1 otherwise.
//!
//! TEMPLATE may instead be a mix, `FILE=EXPECT[,FILE=EXPECT...]`: request
//! *i* sends the body of the (*i* mod n)th file (its `@SUBJECT@`, if any,
//! replaced as above), and every answer is checked against its EXPECT:
//! `allow` or `deny` (status 200 and a body that starts with
//! `{"decision":"allow"` or `{"decision":"deny"` and ends with the
//! `"decision_id"` member, a UUID), or a status such as `400` (that status
//! and a body that starts with `{"error":{"code":"`). A file with no
//! `@SUBJECT@` is the same request every time, so every answer to it must
//! also be the same bytes as the first (a decision up to its
//! `decision_id`). Answers that differ are counted as `wrong` (the first
//! few printed on stderr), and the exit status is 1 when there is any.
//!
//! Prints one line: requests sent and their answers by status, the rate
//! achieved, latency percentiles from the due time, how many requests
//! were sent more than 1 ms after they were due (when that is large, the
//! connections or the generator, not only the server, were the limit),
//! and the generator's own CPU time per request (user + system, from
//! `/proc/self/stat`), since it shares the machine with the server, and
//! how long it was runnable but waiting for a CPU (`/proc/self/schedstat`).
//!
//! A second line splits the latency in two, with the kernel's receive
//! timestamp of each answer (`SO_TIMESTAMPNS`; over HTTP/2, that of the
//! last segment of the read that completed the answer): the
//! server's part, from the request handed to the kernel to its answer
//! arriving in the generator's socket (the server's queue, its work and
//! its waiting for a CPU, and the loopback), plus any wait for a free
//! connection after the due time (HTTP/1.1: every connection busy with
//! an earlier request; over HTTP/2 a wait for room on a stream-limited
//! connection is not told apart and counts as the generator's), and the
//! generator's part, the rest (sending after the due time for its own
//! reasons, and reading the answer after it arrived). The send time is
//! taken just before the write that finishes the request (an answer can
//! arrive before that write returns). The total is still measured from
//! the due time.
//!
//! `OPENLOOP_SLICE_US=N` asks the kernel (EEVDF, Linux 6.12 and later)
//! for a scheduler slice of N µs for the generator (the default is
//! about 1.4 ms on a 2-CPU host). A thread with a shorter slice
//! than the one running gets the CPU soon after it is woken instead of
//! waiting out the other's slice; its share of the CPU is unchanged. It
//! is the generator's own setting (the server is left as it is): it
//! makes the generator send and read on time, so that less of what it
//! measures is its own waiting.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: openloop PORT PATH TEMPLATE RATE SECONDS CONNECTIONS SUBJECTS RUN [http1|h2]";

/// The kernel interfaces used, from the C library std already links.
mod sys {
    use std::os::raw::{c_int, c_long};

    /// `struct epoll_event`: packed on x86-64 only.
    #[cfg_attr(target_arch = "x86_64", repr(C, packed))]
    #[cfg_attr(not(target_arch = "x86_64"), repr(C))]
    #[derive(Clone, Copy)]
    pub struct EpollEvent {
        pub events: u32,
        pub data: u64,
    }

    #[repr(C)]
    pub struct Timespec {
        pub tv_sec: c_long,
        pub tv_nsec: c_long,
    }

    #[repr(C)]
    pub struct Itimerspec {
        pub it_interval: Timespec,
        pub it_value: Timespec,
    }

    pub const EPOLL_CLOEXEC: c_int = 0o2000000;
    pub const EPOLL_CTL_ADD: c_int = 1;
    pub const EPOLL_CTL_DEL: c_int = 2;
    pub const EPOLL_CTL_MOD: c_int = 3;
    pub const EPOLLIN: u32 = 0x1;
    pub const EPOLLOUT: u32 = 0x4;
    pub const CLOCK_MONOTONIC: c_int = 1;
    pub const TFD_NONBLOCK: c_int = 0o4000;
    pub const TFD_CLOEXEC: c_int = 0o2000000;
    pub const CLOCK_REALTIME: c_int = 0;
    pub const SOL_SOCKET: c_int = 1;
    /// `SO_TIMESTAMPNS`, which is also the control message's type.
    pub const SO_TIMESTAMPNS: c_int = 35;

    /// `struct sched_attr` (Linux).
    #[repr(C)]
    #[derive(Default)]
    pub struct SchedAttr {
        pub size: u32,
        pub policy: u32,
        pub flags: u64,
        pub nice: i32,
        pub priority: u32,
        /// For `SCHED_OTHER` (Linux 6.12 and later): the thread's slice,
        /// in nanoseconds.
        pub runtime: u64,
        pub deadline: u64,
        pub period: u64,
        pub util_min: u32,
        pub util_max: u32,
    }

    #[cfg(target_arch = "x86_64")]
    pub const SYS_SCHED_SETATTR: c_long = 314;
    #[cfg(target_arch = "x86_64")]
    pub const SYS_SCHED_GETATTR: c_long = 315;
    #[cfg(target_arch = "aarch64")]
    pub const SYS_SCHED_SETATTR: c_long = 274;
    #[cfg(target_arch = "aarch64")]
    pub const SYS_SCHED_GETATTR: c_long = 275;

    #[repr(C)]
    pub struct Iovec {
        pub base: *mut u8,
        pub len: usize,
    }

    #[repr(C)]
    pub struct Msghdr {
        pub name: *mut u8,
        pub namelen: u32,
        pub iov: *mut Iovec,
        pub iovlen: usize,
        pub control: *mut u8,
        pub controllen: usize,
        pub flags: c_int,
    }

    /// `struct cmsghdr`, followed by its data (8-byte aligned on 64-bit).
    #[repr(C)]
    pub struct Cmsghdr {
        pub len: usize,
        pub level: c_int,
        pub kind: c_int,
    }

    extern "C" {
        pub fn epoll_create1(flags: c_int) -> c_int;
        pub fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
        pub fn epoll_wait(
            epfd: c_int,
            events: *mut EpollEvent,
            max: c_int,
            timeout: c_int,
        ) -> c_int;
        pub fn timerfd_create(clock: c_int, flags: c_int) -> c_int;
        pub fn timerfd_settime(
            fd: c_int,
            flags: c_int,
            new: *const Itimerspec,
            old: *mut Itimerspec,
        ) -> c_int;
        pub fn read(fd: c_int, buf: *mut u8, count: usize) -> isize;
        pub fn recvmsg(fd: c_int, msg: *mut Msghdr, flags: c_int) -> isize;
        pub fn setsockopt(
            fd: c_int,
            level: c_int,
            name: c_int,
            value: *const c_int,
            len: u32,
        ) -> c_int;
        pub fn clock_gettime(clock: c_int, time: *mut Timespec) -> c_int;
        pub fn syscall(number: c_long, ...) -> c_long;
    }
}

fn fail(message: String) -> ! {
    eprintln!("openloop: {message}");
    std::process::exit(1);
}

fn arg<T: std::str::FromStr>(args: &[String], index: usize, name: &str) -> T {
    match args.get(index).and_then(|a| a.parse().ok()) {
        Some(value) => value,
        None => {
            eprintln!("{USAGE} ({name} missing or not a number)");
            std::process::exit(2);
        }
    }
}

/// What an answer must be, in a mix.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// No check beyond the status that is counted.
    Any,
    /// 200 with a decision of this effect.
    Decision(&'static str),
    /// This status, with a JSON error body.
    Error(u16),
}

/// `,"decision_id":"` + a hyphenated UUID + `"}`: how a decision ends.
const ID_TAIL: usize = 16 + 36 + 2;

impl Expect {
    fn parse(text: &str) -> Option<Expect> {
        match text {
            "allow" => Some(Expect::Decision("allow")),
            "deny" => Some(Expect::Decision("deny")),
            code => code.parse().ok().map(Expect::Error),
        }
    }

    /// True when an answer of `status` with `body` is what was expected.
    fn holds(self, status: u16, body: &[u8]) -> bool {
        match self {
            Expect::Any => true,
            Expect::Decision(effect) => {
                status == 200
                    && body.starts_with(b"{\"decision\":\"")
                    && body[13..].starts_with(effect.as_bytes())
                    && body[13 + effect.len()..].starts_with(b"\",")
                    && body.len() > ID_TAIL
                    && body[body.len() - ID_TAIL..].starts_with(b",\"decision_id\":\"")
                    && body.ends_with(b"\"}")
                    && body[body.len() - 38..body.len() - 2]
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || *b == b'-')
            }
            Expect::Error(code) => {
                status == code
                    && body.starts_with(b"{\"error\":{\"code\":\"")
                    && body.ends_with(b"}")
            }
        }
    }

    /// The part of an answer that must be the same every time the same
    /// request is sent: a decision without its id, or the whole error.
    fn stable(self, body: &[u8]) -> &[u8] {
        match self {
            Expect::Decision(_) if body.len() > ID_TAIL => &body[..body.len() - ID_TAIL],
            _ => body,
        }
    }
}

/// One request of the mix.
struct Body {
    /// The text before and after `@SUBJECT@` (none: sent as it is).
    text: String,
    split: Option<usize>,
    expect: Expect,
    /// The first right answer's stable part, for a body with no subject.
    reference: Option<Vec<u8>>,
}

/// The bodies to send, in turn, and what each must be answered with.
fn read_mix(spec: &str) -> Vec<Body> {
    let read = |file: &str| {
        std::fs::read_to_string(file).unwrap_or_else(|error| {
            eprintln!("openloop: cannot read `{file}`: {error}");
            std::process::exit(2);
        })
    };
    let body = |text: String, expect| {
        let split = text.find("@SUBJECT@");
        let text = text.replacen("@SUBJECT@", "", 1);
        Body {
            text,
            split,
            expect,
            reference: None,
        }
    };
    if !spec.contains('=') {
        let text = read(spec);
        if !text.contains("@SUBJECT@") {
            eprintln!("openloop: `{spec}` has no @SUBJECT@");
            std::process::exit(2);
        }
        return vec![body(text, Expect::Any)];
    }
    spec.split(',')
        .map(|part| {
            let Some((file, expect)) = part.rsplit_once('=') else {
                eprintln!("openloop: `{part}` is not FILE=EXPECT");
                std::process::exit(2);
            };
            let Some(expect) = Expect::parse(expect) else {
                eprintln!("openloop: `{expect}` is not allow, deny or a status");
                std::process::exit(2);
            };
            body(read(file), expect)
        })
        .collect()
}

/// What every mode is asked to do.
struct Setup {
    port: u16,
    path: String,
    seconds: f64,
    connections: usize,
    subjects: u64,
    run: String,
    /// Requests in all, and the time between two, in seconds.
    total: u64,
    interval: f64,
}

impl Setup {
    /// The subject id request `index` puts in place of `@SUBJECT@`.
    fn subject(&self, body: &Body, index: u64) -> String {
        let run = &self.run;
        match (body.split, self.subjects) {
            (None, _) => String::new(),
            (Some(_), 0) => format!("spiffe://load.writ/{run}/{index}"),
            (Some(_), n) => format!("spiffe://load.writ/{run}/s{}", index % n),
        }
    }
}

impl Body {
    /// Appends the body with `who` in place of `@SUBJECT@`.
    fn write(&self, out: &mut Vec<u8>, who: &str) {
        match self.split {
            Some(at) => {
                out.extend_from_slice(self.text[..at].as_bytes());
                out.extend_from_slice(who.as_bytes());
                out.extend_from_slice(self.text[at..].as_bytes());
            }
            None => out.extend_from_slice(self.text.as_bytes()),
        }
    }
}

/// Whether the answer to request `index` is wrong (the first few wrong
/// ones are printed).
fn check(mix: &mut [Body], index: u64, status: u16, answer: &[u8], reported: &mut usize) -> bool {
    let kinds = mix.len() as u64;
    let entry = &mut mix[(index % kinds) as usize];
    let mut wrong = !entry.expect.holds(status, answer);
    if !wrong && entry.split.is_none() && entry.expect != Expect::Any {
        let stable = entry.expect.stable(answer);
        match &entry.reference {
            Some(reference) => wrong = reference.as_slice() != stable,
            None => entry.reference = Some(stable.to_vec()),
        }
    }
    if wrong && *reported < 3 {
        *reported += 1;
        eprintln!(
            "openloop: request {index}: unexpected answer {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        );
    }
    wrong
}

/// A request on the wire.
struct Pending {
    index: u64,
    due: Instant,
    /// Sent more than 1 ms after it was due.
    late: bool,
    /// When the write that finished it began, on the real-time clock the
    /// kernel's receive timestamps use.
    sent: Option<i128>,
    /// How long it waited, after it was due, for a connection to be free
    /// (every one busy with an earlier request: the server's part).
    queued: Duration,
}

struct Connection {
    stream: TcpStream,
    /// The request being written, and how much of it is out.
    out: Vec<u8>,
    written: usize,
    /// The answer being read.
    input: Vec<u8>,
    have: usize,
    pending: Option<Pending>,
    /// Registered for `EPOLLOUT` too (a write that did not finish).
    watching_out: bool,
    /// When its last answer was read (and it became free).
    freed: Instant,
}

struct Sample {
    latency: Duration,
    /// From the request handed to the kernel to its answer
    /// arriving in the generator's socket (the kernel's receive
    /// timestamp): the server's part of `latency`, loopback included.
    /// The rest is the generator's: sending after the due time, and
    /// reading the answer after it arrived.
    wire: Option<Duration>,
    /// Waited for a free connection after it was due (HTTP/1.1): the
    /// server's part too.
    queued: Duration,
    late: bool,
    status: u16,
    /// The answer was not what the mix expected.
    wrong: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete answer in `input[..have]`: its status and where its body is.
/// None while more is to be read.
fn parse_answer(input: &[u8]) -> Option<(u16, std::ops::Range<usize>)> {
    let end = find(input, b"\r\n\r\n")?;
    let head = &input[..end];
    let mut length = 0usize;
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 15 && line[..15].eq_ignore_ascii_case(b"content-length:") {
            length = std::str::from_utf8(&line[15..])
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    if input.len() < end + 4 + length {
        return None;
    }
    let status = std::str::from_utf8(head.get(9..12)?)
        .ok()
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Some((status, end + 4..end + 4 + length))
}

/// The real-time clock in nanoseconds (the clock of the kernel's receive
/// timestamps).
fn real_now() -> i128 {
    let mut time = sys::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes one `timespec`.
    unsafe { sys::clock_gettime(sys::CLOCK_REALTIME, &mut time) };
    time.tv_sec as i128 * 1_000_000_000 + time.tv_nsec as i128
}

/// Sets this thread's scheduler slice to `micros` (EEVDF, Linux 6.12 and
/// later; the kernel keeps it within 0.1 to 100 ms), keeping its policy
/// and nice value. Says why on stderr when the kernel refuses.
fn set_slice(micros: u64) {
    let size = std::mem::size_of::<sys::SchedAttr>() as u32;
    let mut attr = sys::SchedAttr::default();
    // SAFETY: the kernel writes at most `size` bytes into `attr`.
    let read = unsafe {
        sys::syscall(
            sys::SYS_SCHED_GETATTR,
            0 as std::os::raw::c_int,
            &mut attr as *mut sys::SchedAttr,
            size,
            0 as std::os::raw::c_uint,
        )
    };
    attr.size = size;
    attr.flags = 0;
    attr.runtime = micros * 1000;
    // SAFETY: the kernel reads `size` bytes of `attr`.
    let set = read == 0
        && unsafe {
            sys::syscall(
                sys::SYS_SCHED_SETATTR,
                0 as std::os::raw::c_int,
                &attr as *const sys::SchedAttr,
                0 as std::os::raw::c_uint,
            )
        } == 0;
    if !set {
        eprintln!(
            "openloop: cannot set the generator's slice to {micros} us: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Asks the kernel to stamp what arrives on `stream` (`SO_TIMESTAMPNS`).
fn stamp_arrivals(stream: &TcpStream) {
    let on: std::os::raw::c_int = 1;
    // SAFETY: `on` outlives the call.
    unsafe {
        sys::setsockopt(
            stream.as_raw_fd(),
            sys::SOL_SOCKET,
            sys::SO_TIMESTAMPNS,
            &on,
            4,
        )
    };
}

/// `read` with the kernel's receive timestamp of what was read (real-time
/// nanoseconds), when it gives one.
fn read_stamped(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<i128>)> {
    let mut iov = sys::Iovec {
        base: buf.as_mut_ptr(),
        len: buf.len(),
    };
    let mut control = [0u64; 8];
    let mut msg = sys::Msghdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: std::mem::size_of_val(&control),
        flags: 0,
    };
    // SAFETY: every pointer in `msg` is to a live buffer of the given size.
    let n = unsafe { sys::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let header = std::mem::size_of::<sys::Cmsghdr>();
    let mut stamp = None;
    let mut at = 0usize;
    let bytes: &[u8] = words_as_bytes(&control);
    while at + header <= msg.controllen.min(bytes.len()) {
        let word = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = word(at) as usize;
        let level = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap_or([0; 4]));
        let kind = u32::from_ne_bytes(bytes[at + 12..at + 16].try_into().unwrap_or([0; 4]));
        if len < header {
            break;
        }
        if level as i32 == sys::SOL_SOCKET
            && kind as i32 == sys::SO_TIMESTAMPNS
            && at + header + 16 <= bytes.len()
        {
            let seconds = word(at + header) as i64 as i128;
            let nanos = word(at + header + 8) as i64 as i128;
            if seconds > 0 {
                stamp = Some(seconds * 1_000_000_000 + nanos);
            }
        }
        at += (len + 7) & !7;
    }
    Ok((n as usize, stamp))
}

/// The bytes of a `u64` buffer.
fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: any bytes are valid `u8`s, and the length is the same memory.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), std::mem::size_of_val(words)) }
}

/// How long this (one-threaded) process has been runnable but waiting for
/// a CPU, from `/proc/self/schedstat` (zero when the kernel does not keep
/// it).
fn run_wait() -> Duration {
    let text = std::fs::read_to_string("/proc/self/schedstat").unwrap_or_default();
    let nanos = text
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(nanos)
}

/// The CPU time (user + system) this process has used, from `/proc`.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

struct Poller {
    epoll: i32,
    timer: i32,
}

const TIMER: u64 = u64::MAX;

impl Poller {
    fn new() -> Poller {
        // SAFETY: plain system calls on descriptors this process owns.
        let (epoll, timer) = unsafe {
            (
                sys::epoll_create1(sys::EPOLL_CLOEXEC),
                sys::timerfd_create(sys::CLOCK_MONOTONIC, sys::TFD_NONBLOCK | sys::TFD_CLOEXEC),
            )
        };
        if epoll < 0 || timer < 0 {
            fail(format!(
                "epoll or timerfd: {}",
                std::io::Error::last_os_error()
            ));
        }
        let poller = Poller { epoll, timer };
        poller.control(sys::EPOLL_CTL_ADD, timer, sys::EPOLLIN, TIMER);
        poller
    }

    fn control(&self, op: i32, fd: i32, events: u32, data: u64) {
        let mut event = sys::EpollEvent { events, data };
        // SAFETY: `event` outlives the call.
        if unsafe { sys::epoll_ctl(self.epoll, op, fd, &mut event) } < 0 {
            fail(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
    }

    /// Wakes the thread `after` from now (at least a nanosecond: zero
    /// would disarm the timer).
    fn arm(&self, after: Duration) {
        let nanos = after.as_nanos().max(1);
        let value = sys::Itimerspec {
            it_interval: sys::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: sys::Timespec {
                tv_sec: (nanos / 1_000_000_000) as _,
                tv_nsec: (nanos % 1_000_000_000) as _,
            },
        };
        // SAFETY: `value` outlives the call.
        unsafe { sys::timerfd_settime(self.timer, 0, &value, std::ptr::null_mut()) };
    }

    fn clear_timer(&self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer.
        unsafe { sys::read(self.timer, expirations.as_mut_ptr(), 8) };
    }

    fn wait(&self, events: &mut [sys::EpollEvent], timeout_ms: i32) -> usize {
        // SAFETY: the kernel writes at most `events.len()` entries.
        let n = unsafe {
            sys::epoll_wait(
                self.epoll,
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                return 0;
            }
            fail(format!("epoll_wait: {error}"));
        }
        // The timer's wake-up is consumed here; the connections' events
        // are moved to the front.
        let mut kept = 0;
        for i in 0..n as usize {
            if events[i].data == TIMER {
                self.clear_timer();
            } else {
                events[kept] = events[i];
                kept += 1;
            }
        }
        kept
    }

    /// Watches `stream` (made non-blocking) for input, as connection `index`.
    fn watch(&self, stream: &TcpStream, index: usize) {
        if let Err(error) = stream.set_nonblocking(true) {
            fail(format!("cannot make a socket non-blocking: {error}"));
        }
        self.control(
            sys::EPOLL_CTL_ADD,
            stream.as_raw_fd(),
            sys::EPOLLIN,
            index as u64,
        );
    }
}

/// A connection to the server, opened before the clock starts.
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|error| fail(format!("cannot connect to 127.0.0.1:{port}: {error}")));
    let _ = stream.set_nodelay(true);
    stream
}

/// When each request is due, and when a run that stopped being answered
/// is given up.
struct Schedule {
    start: Instant,
    give_up: Instant,
    interval: f64,
    armed_for: u64,
}

impl Schedule {
    fn new(seconds: f64, interval: f64) -> Schedule {
        let start = Instant::now() + Duration::from_millis(20);
        Schedule {
            start,
            // A server that stops answering does not hold the run forever.
            give_up: start + Duration::from_secs_f64(seconds) + Duration::from_secs(30),
            interval,
            armed_for: u64::MAX,
        }
    }

    fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64(self.interval * index as f64)
    }

    /// Wakes the thread when request `next` is due (once per request).
    fn arm(&mut self, poller: &Poller, next: u64) {
        if self.armed_for != next {
            poller.arm(self.due(next).saturating_duration_since(Instant::now()));
            self.armed_for = next;
        }
    }
}

/// HTTP/1.1: one request at a time on each connection.
fn run_http1(setup: &Setup, mix: &mut [Body]) -> (Vec<Sample>, Instant) {
    let Setup {
        port,
        ref path,
        seconds,
        connections,
        total,
        interval,
        ..
    } = *setup;
    let poller = Poller::new();
    // Every connection opens before the clock starts.
    let mut conns: Vec<Option<Connection>> = (0..connections)
        .map(|index| {
            let stream = connect(port);
            stamp_arrivals(&stream);
            poller.watch(&stream, index);
            Some(Connection {
                stream,
                out: Vec::with_capacity(4096),
                written: 0,
                input: vec![0; 1 << 16],
                have: 0,
                pending: None,
                watching_out: false,
                freed: Instant::now(),
            })
        })
        .collect();
    let mut free: Vec<usize> = (0..connections).rev().collect();
    let mut live = connections;
    let mut busy = 0usize;
    let mut samples: Vec<Sample> = Vec::with_capacity(total as usize);
    let mut reported = 0usize;
    let mut events = vec![sys::EpollEvent { events: 0, data: 0 }; 256];
    let mut schedule = Schedule::new(seconds, interval);
    let mut next = 0u64;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
    );

    // A connection that failed: its request is answered with status 0.
    macro_rules! drop_connection {
        ($c:expr, $now:expr) => {{
            if let Some(conn) = conns[$c].take() {
                poller.control(sys::EPOLL_CTL_DEL, conn.stream.as_raw_fd(), 0, 0);
                if let Some(pending) = conn.pending {
                    busy -= 1;
                    samples.push(Sample {
                        latency: $now.saturating_duration_since(pending.due),
                        wire: None,
                        queued: pending.queued,
                        late: pending.late,
                        status: 0,
                        wrong: mix[(pending.index % mix.len() as u64) as usize].expect
                            != Expect::Any,
                    });
                }
                live -= 1;
            }
        }};
    }

    loop {
        let now = Instant::now();
        // Send everything that is due, while a connection is free.
        while next < total && !free.is_empty() {
            let due = schedule.due(next);
            if due > now {
                break;
            }
            let Some(c) = free.pop() else { break };
            let Some(conn) = conns[c].as_mut() else {
                continue;
            };
            let body = &mix[(next % mix.len() as u64) as usize];
            let who = setup.subject(body, next);
            conn.out.clear();
            conn.out.extend_from_slice(head.as_bytes());
            let _ = write!(conn.out, "{}\r\n\r\n", body.text.len() + who.len());
            body.write(&mut conn.out, &who);
            conn.written = 0;
            conn.have = 0;
            conn.pending = Some(Pending {
                index: next,
                due,
                late: now.saturating_duration_since(due) > Duration::from_millis(1),
                sent: None,
                queued: conn.freed.saturating_duration_since(due),
            });
            next += 1;
            busy += 1;
            let mut failed = false;
            // Taken before the write: the answer can arrive before the
            // write returns.
            let writing = real_now();
            while conn.written < conn.out.len() {
                match conn.stream.write(&conn.out[conn.written..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => conn.written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        poller.control(
                            sys::EPOLL_CTL_MOD,
                            conn.stream.as_raw_fd(),
                            sys::EPOLLIN | sys::EPOLLOUT,
                            c as u64,
                        );
                        conn.watching_out = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if conn.written == conn.out.len() {
                if let Some(pending) = conn.pending.as_mut() {
                    pending.sent = Some(writing);
                }
            }
            if failed {
                drop_connection!(c, now);
            }
        }
        if (next >= total && busy == 0) || live == 0 {
            break;
        }
        if now > schedule.give_up {
            eprintln!("openloop: {busy} answers still missing 30 s after the end; giving up");
            for c in 0..conns.len() {
                drop_connection!(c, now);
            }
            let _ = (busy, live);
            break;
        }
        // Wake for the next due request when a connection is free for it.
        if next < total && !free.is_empty() {
            schedule.arm(&poller, next);
        }
        let ready = poller.wait(&mut events, 1000);
        for event in &events[..ready] {
            let (flags, c) = (event.events, event.data as usize);
            let Some(conn) = conns[c].as_mut() else {
                continue;
            };
            let now = Instant::now();
            let mut failed = false;
            if flags & sys::EPOLLOUT != 0 && conn.written < conn.out.len() {
                let writing = real_now();
                loop {
                    match conn.stream.write(&conn.out[conn.written..]) {
                        Ok(0) => {
                            failed = true;
                            break;
                        }
                        Ok(n) => {
                            conn.written += n;
                            if conn.written == conn.out.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if conn.written == conn.out.len() {
                    if let Some(pending) = conn.pending.as_mut().filter(|p| p.sent.is_none()) {
                        pending.sent = Some(writing);
                    }
                }
                if conn.written == conn.out.len() && conn.watching_out {
                    poller.control(
                        sys::EPOLL_CTL_MOD,
                        conn.stream.as_raw_fd(),
                        sys::EPOLLIN,
                        c as u64,
                    );
                    conn.watching_out = false;
                }
            }
            // Read what is there; an answer with no request is a failure.
            let mut answered = None;
            let mut arrived = None;
            while !failed {
                if conn.have == conn.input.len() {
                    let len = conn.input.len();
                    conn.input.resize(len * 2, 0);
                }
                match read_stamped(&conn.stream, &mut conn.input[conn.have..]) {
                    Ok((0, _)) => failed = true,
                    Ok((n, stamp)) => {
                        conn.have += n;
                        arrived = stamp.or(arrived);
                        if conn.pending.is_none() {
                            failed = true;
                        } else if let Some(answer) = parse_answer(&conn.input[..conn.have]) {
                            answered = Some(answer);
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => failed = true,
                }
            }
            if let Some((status, range)) = answered {
                let Some(pending) = conn.pending.take() else {
                    continue;
                };
                let (index, late) = (pending.index, pending.late);
                let wrong = check(mix, index, status, &conn.input[range], &mut reported);
                let wire = match (pending.sent, arrived) {
                    (Some(sent), Some(arrived)) if arrived >= sent => {
                        Some(Duration::from_nanos((arrived - sent) as u64))
                    }
                    _ => None,
                };
                samples.push(Sample {
                    latency: now.saturating_duration_since(pending.due),
                    wire,
                    queued: pending.queued,
                    late,
                    status,
                    wrong,
                });
                busy -= 1;
                conn.have = 0;
                conn.freed = now;
                free.push(c);
            } else if failed {
                drop_connection!(c, now);
            }
        }
    }
    (samples, schedule.start)
}

/// HTTP/2 over cleartext TCP with prior knowledge (RFC 9113 section 3.3):
/// what is needed to send POSTs and read their answers, no more. Request
/// heads are HPACK literals that the server's table never learns; of an
/// answer's head only `:status` is read, which servers (hyper among them)
/// send first and, for the common codes, as an index into HPACK's static
/// table; the rest of the head is skipped, which is sound because the
/// client never decodes a later field.
mod h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
    /// The largest window: the client's own receive windows are opened
    /// this wide so that the server is never held back by them.
    pub const MAX_WINDOW: u32 = (1 << 31) - 1;

    pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An HPACK integer with an N-bit prefix (RFC 7541 section 5.1).
    pub fn integer(out: &mut Vec<u8>, first: u8, prefix: u32, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A literal field without indexing, its name from the static table.
    pub fn literal(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
        integer(out, 0x00, 4, name_index);
        integer(out, 0x00, 7, value.len());
        out.extend_from_slice(value);
    }

    fn read_integer(block: &[u8], at: &mut usize, prefix: u32) -> Option<usize> {
        let max = (1usize << prefix) - 1;
        let mut value = (*block.get(*at)? as usize) & max;
        *at += 1;
        if value < max {
            return Some(value);
        }
        let mut shift = 0;
        loop {
            let byte = *block.get(*at)?;
            *at += 1;
            value += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 || shift > 28 {
                return Some(value);
            }
        }
    }

    /// The static table's `:status` entries (RFC 7541 appendix A).
    fn static_status(index: usize) -> Option<u16> {
        [200, 204, 206, 304, 400, 404, 500]
            .get(index.checked_sub(8)?)
            .copied()
    }

    /// Three digits, Huffman-coded (RFC 7541 appendix B: '0' to '2' are
    /// five bits, '3' to '9' six).
    fn huffman_digits(bytes: &[u8]) -> Option<u16> {
        let mut bits: u64 = 0;
        let mut count = 0;
        for byte in bytes {
            bits = (bits << 8) | *byte as u64;
            count += 8;
        }
        let mut value = 0u16;
        for _ in 0..3 {
            if count < 5 {
                return None;
            }
            let five = (bits >> (count - 5)) & 0x1f;
            let digit = if five <= 2 {
                count -= 5;
                five
            } else {
                if count < 6 {
                    return None;
                }
                let six = (bits >> (count - 6)) & 0x3f;
                count -= 6;
                if !(0x19..=0x1f).contains(&six) {
                    return None;
                }
                six - 0x19 + 3
            };
            value = value * 10 + digit as u16;
        }
        Some(value)
    }

    /// `:status` from the start of a header block; none when it is not
    /// there or is a reference to the server's dynamic table.
    pub fn status(block: &[u8]) -> Option<u16> {
        let mut at = 0;
        // Dynamic table size updates may come first.
        while block.get(at)? & 0xe0 == 0x20 {
            read_integer(block, &mut at, 5)?;
        }
        let first = *block.get(at)?;
        let name = if first & 0x80 != 0 {
            return static_status(read_integer(block, &mut at, 7)?);
        } else if first & 0xc0 == 0x40 {
            read_integer(block, &mut at, 6)?
        } else {
            read_integer(block, &mut at, 4)?
        };
        static_status(name)?;
        let huffman = block.get(at)? & 0x80 != 0;
        let len = read_integer(block, &mut at, 7)?;
        let value = block.get(at..at + len)?;
        if huffman {
            huffman_digits(value)
        } else {
            std::str::from_utf8(value).ok()?.parse().ok()
        }
    }
}

/// A request in flight on an HTTP/2 connection.
struct Stream {
    pending: Pending,
    status: u16,
    body: Vec<u8>,
}

struct H2Connection {
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    have: usize,
    watching_out: bool,
    next_id: u32,
    streams: std::collections::HashMap<u32, Stream>,
    /// What the server lets the client send: on the connection, and on a
    /// new stream; how many streams at once; the largest frame.
    window: i64,
    stream_window: i64,
    max_streams: usize,
    max_frame: usize,
    /// Received since the client last opened the connection window again.
    received: u64,
    /// The server's SETTINGS came; GOAWAY came.
    ready: bool,
    closing: bool,
    /// Streams whose request is in `out`, not yet all written.
    unsent: Vec<u32>,
}

impl H2Connection {
    /// Whether a request with a body of `len` bytes may start now.
    fn can_send(&self, len: usize) -> bool {
        self.ready
            && !self.closing
            && self.streams.len() < self.max_streams
            && self.window >= len as i64
            && self.stream_window >= len as i64
    }

    /// Handles the whole frames in `input`; returns the streams answered
    /// (or reset: status 0), and false when the connection is broken.
    fn frames(&mut self, answers: &mut Vec<(Stream, bool)>) -> bool {
        let mut at = 0;
        while self.have - at >= 9 {
            let head = &self.input[at..at + 9];
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if self.have - at < 9 + len {
                break;
            }
            let payload = self.input[at + 9..at + 9 + len].to_vec();
            at += 9 + len;
            // Padding and priority, where the frame has them.
            let content = |payload: &[u8]| -> Option<Vec<u8>> {
                let mut body = payload;
                let mut pad = 0;
                if flags & h2::PADDED != 0 {
                    pad = *body.first()? as usize;
                    body = &body[1..];
                }
                if kind == h2::HEADERS && flags & h2::PRIORITY != 0 {
                    body = body.get(5..)?;
                }
                Some(body.get(..body.len().checked_sub(pad)?)?.to_vec())
            };
            match kind {
                h2::DATA => {
                    self.received += len as u64;
                    let Some(data) = content(&payload) else {
                        return false;
                    };
                    if let Some(stream) = self.streams.get_mut(&id) {
                        stream.body.extend_from_slice(&data);
                    }
                    if flags & h2::END_STREAM != 0 {
                        if let Some(stream) = self.streams.remove(&id) {
                            answers.push((stream, true));
                        }
                    }
                }
                h2::HEADERS => {
                    let Some(block) = content(&payload) else {
                        return false;
                    };
                    if let Some(stream) = self.streams.get_mut(&id) {
                        if stream.status == 0 {
                            stream.status = h2::status(&block).unwrap_or(1);
                        }
                    }
                    if flags & h2::END_STREAM != 0 {
                        if let Some(stream) = self.streams.remove(&id) {
                            answers.push((stream, true));
                        }
                    }
                }
                h2::RST_STREAM => {
                    if let Some(stream) = self.streams.remove(&id) {
                        answers.push((stream, false));
                    }
                }
                h2::SETTINGS if flags & h2::ACK == 0 => {
                    for setting in payload.chunks_exact(6) {
                        let key = u16::from_be_bytes([setting[0], setting[1]]);
                        let value =
                            u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                        match key {
                            3 => self.max_streams = value as usize,
                            4 => self.stream_window = value as i64,
                            5 => self.max_frame = value as usize,
                            _ => {}
                        }
                    }
                    h2::frame(&mut self.out, h2::SETTINGS, h2::ACK, 0, &[]);
                    self.ready = true;
                }
                h2::PING if flags & h2::ACK == 0 => {
                    h2::frame(&mut self.out, h2::PING, h2::ACK, 0, &payload);
                }
                h2::GOAWAY => {
                    self.closing = true;
                    let last = payload.get(..4).map_or(0, |b| {
                        u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
                    });
                    let dead: Vec<u32> =
                        self.streams.keys().copied().filter(|s| *s > last).collect();
                    for id in dead {
                        if let Some(stream) = self.streams.remove(&id) {
                            answers.push((stream, false));
                        }
                    }
                }
                h2::WINDOW_UPDATE if id == 0 && payload.len() == 4 => {
                    let increment =
                        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                            & 0x7fff_ffff;
                    self.window += increment as i64;
                }
                _ => {}
            }
        }
        self.input.copy_within(at..self.have, 0);
        self.have -= at;
        // Open the connection's receive window again well before it closes.
        if self.received >= 1 << 26 {
            let increment = self.received as u32;
            h2::frame(
                &mut self.out,
                h2::WINDOW_UPDATE,
                0,
                0,
                &increment.to_be_bytes(),
            );
            self.received = 0;
        }
        true
    }

    /// Marks the streams whose requests are now all written as sent at
    /// `at` (taken just before the write that finished them).
    fn mark_sent(&mut self, at: i128) {
        if self.written < self.out.len() || self.unsent.is_empty() {
            return;
        }
        for id in self.unsent.drain(..) {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.pending.sent = Some(at);
            }
        }
    }

    /// Writes what is queued; false when the connection is broken.
    fn flush(&mut self, poller: &Poller, token: u64) -> bool {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.watching_out {
                        poller.control(
                            sys::EPOLL_CTL_MOD,
                            self.stream.as_raw_fd(),
                            sys::EPOLLIN | sys::EPOLLOUT,
                            token,
                        );
                        self.watching_out = true;
                    }
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.written = 0;
        if self.watching_out {
            poller.control(
                sys::EPOLL_CTL_MOD,
                self.stream.as_raw_fd(),
                sys::EPOLLIN,
                token,
            );
            self.watching_out = false;
        }
        true
    }
}

/// HTTP/2: requests are spread over the connections in turn, many at once
/// on each (up to the server's stream limit), and all that is due is
/// written with one system call a connection.
fn run_h2(setup: &Setup, mix: &mut [Body]) -> (Vec<Sample>, Instant) {
    let Setup {
        port,
        ref path,
        seconds,
        connections,
        total,
        interval,
        ..
    } = *setup;
    let poller = Poller::new();
    let mut conns: Vec<Option<H2Connection>> = (0..connections)
        .map(|index| {
            let stream = connect(port);
            let mut conn = H2Connection {
                stream,
                out: Vec::with_capacity(1 << 16),
                written: 0,
                input: vec![0; 1 << 18],
                have: 0,
                watching_out: false,
                next_id: 1,
                streams: std::collections::HashMap::new(),
                window: 65_535,
                stream_window: 65_535,
                max_streams: usize::MAX,
                max_frame: 16_384,
                received: 0,
                ready: false,
                closing: false,
                unsent: Vec::new(),
            };
            // The preface; no server push; the client's windows wide open.
            conn.out.extend_from_slice(h2::PREFACE);
            let mut settings = Vec::new();
            settings.extend_from_slice(&2u16.to_be_bytes());
            settings.extend_from_slice(&0u32.to_be_bytes());
            settings.extend_from_slice(&4u16.to_be_bytes());
            settings.extend_from_slice(&h2::MAX_WINDOW.to_be_bytes());
            h2::frame(&mut conn.out, h2::SETTINGS, 0, 0, &settings);
            let increment = h2::MAX_WINDOW - 65_535;
            h2::frame(
                &mut conn.out,
                h2::WINDOW_UPDATE,
                0,
                0,
                &increment.to_be_bytes(),
            );
            // Blocking until the server's SETTINGS are read.
            let mut answers = Vec::new();
            let sent = conn.stream.write_all(&conn.out);
            conn.out.clear();
            while sent.is_ok() && !conn.ready {
                let have = conn.have;
                match conn.stream.read(&mut conn.input[have..]) {
                    Ok(0) | Err(_) => fail(format!(
                        "127.0.0.1:{port} closed the HTTP/2 connection at its start"
                    )),
                    Ok(n) => conn.have += n,
                }
                if !conn.frames(&mut answers) {
                    fail("the server's first HTTP/2 frames are malformed".to_owned());
                }
            }
            if let Err(error) = sent.and_then(|()| conn.stream.write_all(&conn.out)) {
                fail(format!(
                    "cannot start HTTP/2 with 127.0.0.1:{port}: {error}"
                ));
            }
            conn.out.clear();
            stamp_arrivals(&conn.stream);
            poller.watch(&conn.stream, index);
            Some(conn)
        })
        .collect();
    let mut samples: Vec<Sample> = Vec::with_capacity(total as usize);
    let mut reported = 0usize;
    let mut events = vec![sys::EpollEvent { events: 0, data: 0 }; 256];
    let mut schedule = Schedule::new(seconds, interval);
    let mut next = 0u64;
    let mut turn = 0usize;
    let mut busy = 0usize;
    let mut answers: Vec<(Stream, bool)> = Vec::new();
    let mut head = Vec::new();
    let mut body_bytes = Vec::new();
    let mut arrivals: Vec<Option<i128>> = Vec::new();
    let mut record = |stream: Stream,
                      ok: bool,
                      arrived: Option<i128>,
                      now: Instant,
                      samples: &mut Vec<Sample>,
                      mix: &mut [Body]| {
        let status = if ok { stream.status } else { 0 };
        let wire = match (stream.pending.sent, arrived) {
            (Some(sent), Some(arrived)) if ok && arrived >= sent => {
                Some(Duration::from_nanos((arrived - sent) as u64))
            }
            _ => None,
        };
        let wrong = check(
            mix,
            stream.pending.index,
            status,
            &stream.body,
            &mut reported,
        );
        samples.push(Sample {
            latency: now.saturating_duration_since(stream.pending.due),
            wire,
            queued: Duration::ZERO,
            late: stream.pending.late,
            status,
            wrong,
        });
    };
    loop {
        let now = Instant::now();
        // Queue everything that is due on connections that can take it.
        let mut blocked = false;
        while next < total {
            let due = schedule.due(next);
            if due > now {
                break;
            }
            let body = &mix[(next % mix.len() as u64) as usize];
            let who = setup.subject(body, next);
            body_bytes.clear();
            body.write(&mut body_bytes, &who);
            let Some(c) = (0..conns.len())
                .map(|k| (turn + k) % conns.len())
                .find(|c| {
                    conns[*c]
                        .as_ref()
                        .is_some_and(|conn| conn.can_send(body_bytes.len()))
                })
            else {
                blocked = true;
                break;
            };
            turn = c + 1;
            let Some(conn) = conns[c].as_mut() else {
                continue;
            };
            let id = conn.next_id;
            conn.next_id += 2;
            head.clear();
            head.push(0x83); // :method POST
            head.push(0x86); // :scheme http
            h2::literal(&mut head, 4, path.as_bytes());
            h2::literal(&mut head, 1, b"127.0.0.1");
            h2::literal(&mut head, 31, b"application/json");
            h2::literal(&mut head, 28, body_bytes.len().to_string().as_bytes());
            h2::frame(&mut conn.out, h2::HEADERS, h2::END_HEADERS, id, &head);
            let chunks: Vec<&[u8]> = body_bytes.chunks(conn.max_frame.max(1)).collect();
            for (k, chunk) in chunks.iter().enumerate() {
                let flags = if k + 1 == chunks.len() {
                    h2::END_STREAM
                } else {
                    0
                };
                h2::frame(&mut conn.out, h2::DATA, flags, id, chunk);
            }
            conn.window -= body_bytes.len() as i64;
            conn.unsent.push(id);
            conn.streams.insert(
                id,
                Stream {
                    pending: Pending {
                        index: next,
                        due,
                        late: now.saturating_duration_since(due) > Duration::from_millis(1),
                        sent: None,
                        queued: Duration::ZERO,
                    },
                    status: 0,
                    body: Vec::new(),
                },
            );
            next += 1;
            busy += 1;
        }
        // One write a connection for all of it.
        for c in 0..conns.len() {
            let broken = match conns[c].as_mut() {
                Some(conn) if conn.written < conn.out.len() && !conn.watching_out => {
                    let writing = real_now();
                    let ok = conn.flush(&poller, c as u64);
                    conn.mark_sent(writing);
                    !ok
                }
                _ => false,
            };
            if broken {
                if let Some(conn) = conns[c].take() {
                    poller.control(sys::EPOLL_CTL_DEL, conn.stream.as_raw_fd(), 0, 0);
                    for (_, stream) in conn.streams {
                        busy -= 1;
                        record(stream, false, None, now, &mut samples, mix);
                    }
                }
            }
        }
        let live = conns.iter().filter(|c| c.is_some()).count();
        if (next >= total && busy == 0) || live == 0 {
            break;
        }
        if now > schedule.give_up {
            eprintln!("openloop: {busy} answers still missing 30 s after the end; giving up");
            for conn in conns.iter_mut().filter_map(Option::take) {
                for (_, stream) in conn.streams {
                    record(stream, false, None, now, &mut samples, mix);
                }
            }
            break;
        }
        if next < total && !blocked {
            schedule.arm(&poller, next);
        }
        let ready = poller.wait(&mut events, 1000);
        for event in &events[..ready] {
            let (flags, c) = (event.events, event.data as usize);
            let Some(conn) = conns[c].as_mut() else {
                continue;
            };
            let now = Instant::now();
            let mut broken = false;
            if flags & sys::EPOLLOUT != 0 {
                let writing = real_now();
                broken = !conn.flush(&poller, c as u64);
                conn.mark_sent(writing);
            }
            while !broken {
                if conn.have == conn.input.len() {
                    let len = conn.input.len();
                    conn.input.resize(len * 2, 0);
                }
                let have = conn.have;
                match read_stamped(&conn.stream, &mut conn.input[have..]) {
                    Ok((0, _)) => broken = true,
                    Ok((n, stamp)) => {
                        conn.have += n;
                        broken = !conn.frames(&mut answers);
                        // The answers this read completed arrived then.
                        arrivals.resize(answers.len(), stamp);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => broken = true,
                }
            }
            arrivals.resize(answers.len(), None);
            for ((stream, ok), arrived) in answers.drain(..).zip(arrivals.drain(..)) {
                busy -= 1;
                record(stream, ok, arrived, now, &mut samples, mix);
            }
            if broken {
                if let Some(conn) = conns[c].take() {
                    poller.control(sys::EPOLL_CTL_DEL, conn.stream.as_raw_fd(), 0, 0);
                    for (_, stream) in conn.streams {
                        busy -= 1;
                        record(stream, false, None, now, &mut samples, mix);
                    }
                }
            }
        }
    }
    (samples, schedule.start)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = arg(&args, 1, "PORT");
    let path: String = arg(&args, 2, "PATH");
    let template_file: String = arg(&args, 3, "TEMPLATE");
    let rate: f64 = arg(&args, 4, "RATE");
    let seconds: f64 = arg(&args, 5, "SECONDS");
    let connections: usize = arg(&args, 6, "CONNECTIONS");
    let subjects: u64 = arg(&args, 7, "SUBJECTS");
    let run: String = arg(&args, 8, "RUN");
    let protocol = args.get(9).map_or("http1", String::as_str);
    if connections == 0 || rate <= 0.0 {
        eprintln!("{USAGE} (CONNECTIONS and RATE must be above 0)");
        std::process::exit(2);
    }
    let mut mix = read_mix(&template_file);
    let setup = Setup {
        port,
        path,
        seconds,
        connections,
        subjects,
        run,
        total: (rate * seconds) as u64,
        interval: 1.0 / rate,
    };
    if let Some(micros) = std::env::var("OPENLOOP_SLICE_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
    {
        set_slice(micros);
    }
    let cpu_before = cpu_time();
    let wait_before = run_wait();
    let (samples, start) = match protocol {
        "http1" => run_http1(&setup, &mut mix),
        "h2" => run_h2(&setup, &mut mix),
        other => {
            eprintln!("{USAGE} (PROTOCOL `{other}` is not http1 or h2)");
            std::process::exit(2);
        }
    };
    let took = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    let waited = run_wait().saturating_sub(wait_before);
    if samples.is_empty() {
        fail("no request was answered".to_owned());
    }
    let mut statuses: Vec<(u16, usize)> = Vec::new();
    for sample in &samples {
        match statuses.iter_mut().find(|(s, _)| *s == sample.status) {
            Some((_, n)) => *n += 1,
            None => statuses.push((sample.status, 1)),
        }
    }
    statuses.sort_unstable();
    let late = samples.iter().filter(|s| s.late).count();
    let wrong = samples.iter().filter(|s| s.wrong).count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let index = ((latencies.len() as f64 * q) as usize).min(latencies.len() - 1);
        latencies[index].as_secs_f64() * 1e3
    };
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "{} requests in {:.2} s ({:.0}/s offered {rate:.0}/s; {}; wrong: {wrong}); from due time: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; sent >1 ms late: {late}; generator CPU {:.1} us/request, runnable but waiting {:.1} us/request",
        latencies.len(),
        took.as_secs_f64(),
        latencies.len() as f64 / took.as_secs_f64(),
        statuses.join(", "),
        quantile(0.5),
        quantile(0.9),
        quantile(0.99),
        quantile(0.999),
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / latencies.len() as f64,
        waited.as_secs_f64() * 1e6 / latencies.len() as f64,
    );
    // Where the time went: the server's part (request handed
    // to the kernel to answer arrived) and the generator's (the rest).
    let mut wire: Vec<Duration> = samples
        .iter()
        .filter_map(|s| s.wire.map(|w| w + s.queued))
        .collect();
    let mut own: Vec<Duration> = samples
        .iter()
        .filter_map(|s| s.wire.map(|w| s.latency.saturating_sub(w + s.queued)))
        .collect();
    if !wire.is_empty() {
        wire.sort_unstable();
        own.sort_unstable();
        let at = |v: &[Duration], q: f64| {
            v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
        };
        println!(
            "  split of {} answers: server (waiting for a free connection + sent to arrived) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms; generator (late sending + late reading) p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            wire.len(),
            at(&wire, 0.5),
            at(&wire, 0.99),
            at(&wire, 0.999),
            at(&own, 0.5),
            at(&own, 0.99),
            at(&own, 0.999),
        );
    }
    if wrong > 0 {
        std::process::exit(1);
    }
}
