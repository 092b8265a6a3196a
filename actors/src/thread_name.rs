//! Names the current thread, so a profile tells pushd's threads apart
//! (actix names every arbiter thread alike, and the kernel keeps only 15
//! bytes of a name). std names only threads it spawns itself, hence libc.

/// Sets the current thread's name (truncated to 15 bytes); a no-op off Linux.
pub fn set(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
        bytes.push(0);
        // SAFETY: `bytes` is a NUL-terminated string of at most 16 bytes, as
        // pthread_setname_np requires, alive for the call.
        unsafe {
            libc::pthread_setname_np(libc::pthread_self(), bytes.as_ptr().cast());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}
