//! The execution graph: every task expanded to its subtasks, every exchange to its channels
//! (pointwise for forward, all-to-all otherwise), and the physical placement of subtasks in
//! task slots.
use super::job_graph::JobGraph;
use super::logical::Partitioning;

/// One channel between two subtasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// Index of the job edge.
    pub edge: usize,
    /// Upstream subtask index.
    pub from: usize,
    /// Downstream subtask index.
    pub to: usize,
}

/// Subtasks and channels.
#[derive(Clone, Debug)]
pub struct ExecutionGraph {
    /// The job graph it expands.
    pub job: JobGraph,
    /// Channels of every job edge, in edge order.
    pub channels: Vec<Channel>,
}

impl ExecutionGraph {
    /// Expands `job`.
    pub fn build(job: JobGraph) -> Self {
        let mut channels = Vec::new();
        for (i, e) in job.edges.iter().enumerate() {
            let (up, down) = (job.vertices[e.from].parallelism, job.vertices[e.to].parallelism);
            match e.partitioning {
                Partitioning::Forward => channels.extend((0..up.min(down)).map(|s| Channel { edge: i, from: s, to: s })),
                Partitioning::Global => channels.extend((0..up).map(|s| Channel { edge: i, from: s, to: 0 })),
                _ => {
                    for from in 0..up {
                        channels.extend((0..down).map(|to| Channel { edge: i, from, to }));
                    }
                }
            }
        }
        ExecutionGraph { job, channels }
    }

    /// Channels of job edge `edge`.
    pub fn edge_channels(&self, edge: usize) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(move |c| c.edge == edge)
    }

    /// Total number of subtasks (one thread each).
    pub fn subtask_count(&self) -> usize {
        self.job.vertices.iter().map(|v| v.parallelism).sum()
    }

    /// Places subtasks in slots: within a slot sharing group, subtask i of every task goes to
    /// the group's slot i, so a group needs as many slots as its largest parallelism.
    pub fn placement(&self) -> Vec<Slot> {
        let mut groups: Vec<&str> = Vec::new();
        for v in &self.job.vertices {
            if !groups.contains(&v.slot_sharing_group.as_str()) {
                groups.push(&v.slot_sharing_group);
            }
        }
        let mut slots = Vec::new();
        for group in groups {
            let tasks: Vec<usize> = (0..self.job.vertices.len()).filter(|&v| self.job.vertices[v].slot_sharing_group == group).collect();
            let width = tasks.iter().map(|&v| self.job.vertices[v].parallelism).max().unwrap_or(0);
            for i in 0..width {
                let subtasks = tasks.iter().filter(|&&v| self.job.vertices[v].parallelism > i).map(|&v| (v, i)).collect();
                slots.push(Slot { index: slots.len(), group: group.to_string(), subtasks });
            }
        }
        slots
    }
}

/// A task slot with the subtasks it hosts.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Slot number.
    pub index: usize,
    /// Its slot sharing group.
    pub group: String,
    /// (task, subtask index) pairs.
    pub subtasks: Vec<(usize, usize)>,
}
