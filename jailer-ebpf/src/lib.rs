#![no_std]
// This file exists so the agent can depend on this crate (to be rebuilt when it
// changes); the program itself is the `jailer` binary in main.rs.
