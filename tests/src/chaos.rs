//! The fault campaign of issue 27: the network, processes and Docker engine that its nemeses act
//! through.

pub mod engine;
pub mod members;
pub mod net;
