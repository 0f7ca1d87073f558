//! The picture of a revocation, laid out on the server: trigger → delegations → sessions →
//! sub-agent sessions, one row per session, as boxes and elbow lines the template draws as SVG.

use std::collections::{HashMap, HashSet};

use crate::domain::*;
use crate::store::coverage::Coverage;

/// Sessions drawn at most; the page says how many more the coverage report lists.
pub const MAX_DRAWN: usize = 200;

const COLUMN: i64 = 260;
const BOX_W: i64 = 230;
const BOX_H: i64 = 38;
const ROW: i64 = 48;
const MARGIN: i64 = 10;

/// One box: its place, its two lines of text (escaped by the template) and its CSS class.
pub struct Node {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub label: String,
    pub sub: String,
    pub class: &'static str,
    pub text_x: i64,
    pub label_y: i64,
    pub sub_y: i64,
}

/// A line between two boxes, as SVG polyline points.
pub struct Edge {
    pub points: String,
}

pub struct Tree {
    pub width: i64,
    pub height: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Sessions the report lists that are not drawn.
    pub omitted: usize,
    /// The picture's text alternative.
    pub summary: String,
}

fn short(id: &str) -> String {
    // `ses_0193…` → `ses_0193…` plus its last 6 digits: enough to tell boxes apart.
    match (id.get(..8), id.get(id.len().saturating_sub(6)..)) {
        (Some(head), Some(tail)) if id.len() > 16 => format!("{head}…{tail}"),
        _ => id.to_owned(),
    }
}

fn node(level: i64, row: i64, label: String, sub: String, class: &'static str) -> Node {
    let (x, y) = (MARGIN + level * COLUMN, MARGIN + row * ROW);
    Node { x, y, w: BOX_W, h: BOX_H, label, sub, class, text_x: x + 8, label_y: y + 16, sub_y: y + 31 }
}

fn edge(from: &Node, to: &Node) -> Edge {
    let (x1, y1) = (from.x + from.w, from.y + from.h / 2);
    let (x2, y2) = (to.x, to.y + to.h / 2);
    let mid = x1 + (x2 - x1) / 2;
    Edge { points: format!("{x1},{y1} {mid},{y1} {mid},{y2} {x2},{y2}") }
}

impl Tree {
    /// Lays out the report's sessions (`sessions`: those of them loaded, at most [`MAX_DRAWN`]).
    pub fn draw(report: &Coverage, sessions: &[Session]) -> Tree {
        let survivors: HashSet<SessionId> = report.survivors.iter().copied().collect();
        let revoked_by: HashMap<SessionId, Option<i64>> =
            report.sessions.iter().map(|s| (s.session_id, s.revoked_by_seq)).collect();
        let drawn: HashSet<SessionId> = sessions.iter().map(|s| s.id).collect();
        let mut children: HashMap<SessionId, Vec<&Session>> = HashMap::new();
        let mut by_delegation: Vec<(DelegationId, Vec<&Session>)> = Vec::new();
        for s in sessions {
            match s.parent_session_id.filter(|p| drawn.contains(p)) {
                Some(parent) => children.entry(parent).or_default().push(s),
                None => match by_delegation.iter_mut().find(|(d, _)| *d == s.delegation_id) {
                    Some((_, list)) => list.push(s),
                    None => by_delegation.push((s.delegation_id, vec![s])),
                },
            }
        }
        let event = &report.event;
        let trigger = node(
            0,
            0,
            event.action.clone(),
            format!("event {} · {} {}", event.seq, event.subject.kind, short(&event.subject.id)),
            "trigger",
        );
        let mut nodes = Vec::new();
        let mut edges = Vec::new();
        let mut row = 0;
        let mut deepest = 0;
        for (delegation, tops) in &by_delegation {
            let d = node(1, row, "delegation".to_owned(), short(&delegation.to_string()), "delegation");
            edges.push(edge(&trigger, &d));
            let mut stack: Vec<(&Session, i64, usize)> = Vec::new();
            // The parent of each pushed session is at index `usize` of `nodes` (usize::MAX: the delegation).
            let d_index = nodes.len();
            nodes.push(d);
            stack.extend(tops.iter().rev().map(|s| (*s, 2, d_index)));
            while let Some((s, level, parent)) = stack.pop() {
                let status = if survivors.contains(&s.id) {
                    ("survivor", "SURVIVED · still active".to_owned())
                } else {
                    match revoked_by.get(&s.id).copied().flatten() {
                        Some(seq) => ("revoked", format!("revoked by event {seq}")),
                        None => ("survivor", "not revoked".to_owned()),
                    }
                };
                let label = if level == 2 { "session" } else { "sub-agent" };
                let n = node(level, row, format!("{label} {}", short(&s.id.to_string())), status.1, status.0);
                edges.push(edge(&nodes[parent], &n));
                let index = nodes.len();
                nodes.push(n);
                deepest = deepest.max(level);
                row += 1;
                if let Some(kids) = children.get(&s.id) {
                    stack.extend(kids.iter().rev().map(|k| (*k, level + 1, index)));
                }
            }
        }
        let rows = row.max(1);
        nodes.insert(0, trigger);
        let summary = format!(
            "{} ended {} session(s) under {} delegation(s); {} survivor(s).",
            event.action,
            report.sessions.len() - report.survivors.len(),
            by_delegation.len(),
            report.survivors.len()
        );
        Tree {
            width: 2 * MARGIN + deepest.max(0) * COLUMN + BOX_W,
            height: 2 * MARGIN + rows * ROW,
            nodes,
            edges,
            omitted: report.sessions.len().saturating_sub(sessions.len()),
            summary,
        }
    }
}
