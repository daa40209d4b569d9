//! POSIX signal calls that std does not offer: with the frame's SSE2 string scan and the
//! normalizer's SSE2 survey, the only unsafe code in mcpdome.
//!
//! mcpdome must end its upstream when it is told to stop, so SIGTERM, SIGINT and SIGHUP are
//! blocked in every thread ([`block`], called before any thread starts) and received
//! synchronously by one thread with `sigwait` ([`wait`]). No signal handler runs, so there is no
//! async-signal-safety to get wrong. The upstream starts with an empty mask ([`prepare_child`]), so
//! it gets these signals normally. [`kill_group`] sends a signal to the upstream's whole
//! process group, because `npx server` is a tree of processes and `Child::kill` reaches only the
//! first. [`prepare_child`] also asks the kernel to SIGKILL the upstream if mcpdome itself is killed
//! with SIGKILL and never gets to clean up.
#![allow(unsafe_code)]

use std::io;
use std::process::Command;

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGINT: i32 = libc::SIGINT;
pub const SIGHUP: i32 = libc::SIGHUP;
pub const SIGKILL: i32 = libc::SIGKILL;

/// The set of signals mcpdome waits for.
pub struct Signals {
    set: libc::sigset_t,
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and in every thread it starts later.
/// SIGXFSZ is blocked too and never waited for: a write past a file size limit (`ulimit -f`)
/// then fails with EFBIG, and the audit log refuses the message, instead of the signal killing
/// mcpdome with requests open.
pub fn block() -> io::Result<Signals> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use, and
    // pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let mut blocked = set;
        libc::sigaddset(&mut blocked, libc::SIGXFSZ);
        let err = libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
        Ok(Signals { set })
    }
}

/// Waits until one of the blocked signals arrives and returns its number.
pub fn wait(signals: &Signals) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` was initialised by `block`; `sig` is a valid out-pointer.
        let err = unsafe { libc::sigwait(&signals.set, &mut sig) };
        if err == 0 {
            return sig;
        }
    }
}

/// Sends `sig` to every process in the process group `pgid`.
pub fn kill_group(pgid: u32, sig: i32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions. A negative pid addresses a group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Prepares a process between fork and exec: it gets an empty signal mask (it would otherwise
/// inherit the mask [`block`] set, and ignore SIGTERM), and it receives SIGKILL when the thread
/// that spawned it dies, so killing mcpdome with SIGKILL cannot orphan it. If mcpdome died
/// between the fork and the `prctl`, the signal would never come: the child sees that its parent
/// changed and does not start.
pub fn prepare_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs between fork and exec and only calls sigemptyset,
    // pthread_sigmask, prctl and getppid, which are async-signal-safe and touch only its own
    // stack.
    unsafe {
        command.pre_exec(move || {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
