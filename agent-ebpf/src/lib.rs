//! aitrail kernel programs are built as the `agent-ebpf` binary for the BPF
//! target; this empty library lets the agent list the crate as a
//! build-dependency so cargo rebuilds the agent when a program changes.
#![no_std]
