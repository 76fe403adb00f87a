//! Operators: fused stateless steps, and two-phase reductions (aggregate, sort / limit / top-n,
//! distinct).
pub mod aggregate;
pub mod dictionary;
pub mod fork;
pub mod hash_aggregate;
pub mod hash_index;
pub mod join;
pub mod join_keys;
pub mod order;
pub mod reduce;
pub mod row_eval;
pub mod running;
pub mod shared_build;
pub mod stateless;
pub mod watermark;
pub mod window;
