//! BFD (RFC 5880 asynchronous mode, RFC 5881 single hop).

pub mod packet;
pub mod session;
