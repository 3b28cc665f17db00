//! `bench`: the tools that prove Helios's figures on any machine.
pub mod profiles;
