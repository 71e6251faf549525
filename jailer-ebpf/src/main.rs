//! jailer's XDP program.
//!
//! Drops TCP packets from banned sources to the ports their ban covers and
//! passes everything else. Anything it cannot parse is passed: a blocker that
//! fails closed on odd frames would take the mail server down with it.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn jailer_xdp(ctx: XdpContext) -> u32 {
    verdict::count(jailer_common::stat::SEEN);
    verdict::try_jailer(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
