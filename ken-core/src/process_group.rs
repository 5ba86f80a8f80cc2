//! Shell scripts for providers whose exec API cannot kill a command.
//!
//! The command runs under a wrapper that writes its process group id to a file and
//! then `exec`s the command, so the command keeps the wrapper's pid. Where the
//! wrapper does not lead its own group, it starts the command under `setsid -w`
//! instead. Killing is then a second exec that runs [`kill_script`], which signals
//! the whole group.

/// Tenths of a second that [`kill_script`] waits after TERM before it sends KILL.
pub const KILL_GRACE_TENTHS: u32 = 20;

/// Returns the `sh -c` script that records the process group in `pgid_file` and
/// `exec`s `"$@"`.
///
/// `setup` runs first (for example `mkdir -p DIR 2>/dev/null; `), and
/// `before_exec` runs right before the command replaces the shell (for example
/// `unset PWD; `). Both are shell text and must end with `; ` when not empty.
pub fn wrapper_script(pgid_file: &str, setup: &str, before_exec: &str) -> String {
    format!(
        "{setup}read -r _ _ _ _ pgrp _ 2>/dev/null < /proc/$$/stat; \
         if [ \"$pgrp\" = \"$$\" ]; then {{ echo $$ > {pgid_file}; }} 2>/dev/null; unset pgrp; {before_exec}exec \"$@\"; fi; \
         unset pgrp; {before_exec}exec setsid -w sh -c '{{ echo $$ > \"$0\"; }} 2>/dev/null; exec \"$@\"' {pgid_file} \"$@\""
    )
}

/// Returns the script that kills the group named in `pgid_file`.
///
/// The script waits up to `file_wait_tenths` tenths of a second for the file and
/// sends TERM to the group. After [`KILL_GRACE_TENTHS`] it sends KILL, then it
/// removes the file.
///
/// `kill -s SIGNAL -- -PGID` is the form that dash, bash and busybox all accept
/// for a process group.
pub fn kill_script(pgid_file: &str, file_wait_tenths: u32) -> String {
    format!(
        "f={pgid_file}; i=0; \
         while [ ! -s \"$f\" ] && [ $i -lt {file_wait_tenths} ]; do sleep 0.1; i=$((i+1)); done; \
         [ -s \"$f\" ] || exit 0; \
         read -r pg < \"$f\"; \
         kill -s TERM -- -\"$pg\" 2>/dev/null || {{ rm -f \"$f\"; exit 0; }}; \
         i=0; \
         while kill -s 0 -- -\"$pg\" 2>/dev/null; do \
           if [ $i -ge {KILL_GRACE_TENTHS} ]; then kill -s KILL -- -\"$pg\" 2>/dev/null; break; fi; \
           sleep 0.1; i=$((i+1)); \
         done; \
         rm -f \"$f\""
    )
}
