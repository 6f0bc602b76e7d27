//! How records move between this box's streams: a processor writes its
//! source's records (or what it makes of them) to its output and
//! dead-letter streams, and a sink into the box's own Kinesis API writes
//! them to another stream here. A loop of such flows sends records round
//! for ever and fills the disk, so a processor or sink that would close
//! one is refused; this module finds the loop.

use std::collections::{HashMap, VecDeque};

/// Records of stream `from` reach stream `to` through `by` (as a person
/// reads it: a processor's name, or `sink NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub by: String,
}

/// The loop one of the `new` flows would close with the `existing` ones,
/// written as its hops: `a -> b (p1) -> a (p2)`; `None` when there is none.
pub fn closed_loop(new: &[Flow], existing: &[Flow]) -> Option<String> {
    let all: Vec<&Flow> = new.iter().chain(existing).collect();
    for first in new {
        let source = first.from.as_str();
        // Breadth-first over the streams reached from what `first` writes;
        // each stream keeps the flow that reached it, to name the path.
        let mut reached_by: HashMap<&str, &Flow> = HashMap::from([(first.to.as_str(), first)]);
        let mut queue = VecDeque::from([first.to.as_str()]);
        while let Some(stream) = queue.pop_front() {
            if stream == source {
                let mut hops = Vec::new();
                let mut at = stream;
                loop {
                    let flow = reached_by[at];
                    hops.push(format!("{at} ({})", flow.by));
                    if std::ptr::eq(flow, first) {
                        break;
                    }
                    at = &flow.from;
                }
                hops.reverse();
                return Some(format!("{source} -> {}", hops.join(" -> ")));
            }
            for flow in all.iter().filter(|flow| flow.from == stream) {
                if !reached_by.contains_key(flow.to.as_str()) {
                    reached_by.insert(&flow.to, flow);
                    queue.push_back(&flow.to);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(from: &str, to: &str, by: &str) -> Flow {
        Flow {
            from: from.into(),
            to: to.into(),
            by: by.into(),
        }
    }

    #[test]
    fn a_flow_back_to_its_own_source_is_a_loop_named_hop_by_hop() {
        let existing = [
            flow("clicks", "buys", "filter"),
            flow("buys", "rich", "enrich"),
            flow("buys", "totals", "count"),
            flow("totals", "archive", "sink north"),
        ];
        assert_eq!(
            closed_loop(&[flow("rich", "clicks", "back")], &existing).as_deref(),
            Some("rich -> clicks (back) -> buys (filter) -> rich (enrich)")
        );
        assert_eq!(
            closed_loop(&[flow("archive", "clicks", "sink south")], &existing).as_deref(),
            Some(
                "archive -> clicks (sink south) -> buys (filter) -> totals (count) \
                 -> archive (sink north)"
            )
        );
        assert_eq!(
            closed_loop(&[flow("clicks", "clicks", "echo")], &existing).as_deref(),
            Some("clicks -> clicks (echo)")
        );
        // Fan-in, fan-out and chains that end are fine.
        for fine in [
            flow("clicks", "totals", "more"),
            flow("totals", "elsewhere", "sink west"),
            flow("rich", "audit", "audit"),
        ] {
            assert_eq!(closed_loop(&[fine], &existing), None);
        }
    }
}
