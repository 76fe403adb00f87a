//! Operators: fused stateless steps and two-phase aggregation.
pub mod aggregate;
pub mod stateless;
