//! GraphQL query analysis for the `graphql` plugin (SPEC §14): measure the
//! operation that will run — depth, aliases, root fields, tokens, complexity,
//! introspection — and refuse it when it is over a limit.
//!
//! The work is linear in the size of the query and bounded in stack:
//!
//! 1. A lexer pass (`scan`) counts tokens and the nesting of selection sets
//!    before anything is parsed, so a hostile `{a{a{a…` or a megabyte of
//!    aliases costs at most `max_tokens` tokens of lexing.
//! 2. apollo-parser builds the syntax tree under a token limit and a recursion
//!    limit of `MAX_NESTING` (128), so neither it nor the walk below (whose
//!    recursion follows the tree's selection sets) descends without bound.
//! 3. Fragments are checked for unknown names and cycles and ordered by an
//!    iterative depth-first search; each is measured once, and a spread adds
//!    its fragment's memoised `Summary`. Forty fragments each spreading the
//!    one before twice take forty steps, their 2^40 fields counted with
//!    saturating arithmetic.

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::{Lexer, Parser, SyntaxKind, SyntaxNode, SyntaxToken, TokenKind};
use serde_json::{Map, Value as Json};

/// How deep selection sets (and, on the parser's same count, list and object
/// values and list types) may nest at all. The parser takes about 0.8 KiB of
/// stack a level in a debug build and 0.2 KiB in release, so 128 levels stay
/// far inside any thread's stack. A `max_depth` above 128 is effectively 128.
const MAX_NESTING: usize = 128;
/// Whitespace, commas and comments do not count against `max_tokens`, but
/// they are not free to lex and store: a query may have at most this many
/// lexical items per allowed token, plus [`RAW_SLACK`].
const RAW_PER_TOKEN: usize = 5;
/// Room for a comment block or odd formatting in a small query.
const RAW_SLACK: usize = 1024;
/// The most bytes of client text a message repeats.
const ECHO: usize = 100;

/// The plugin's limits (SPEC §14 defaults: 10, 15, 10, 5000, 1000, 10, false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_depth: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_tokens: usize,
    pub max_complexity: u64,
    pub default_list_size: u64,
    pub introspection: bool,
}

impl Limits {
    /// SPEC §14's defaults.
    pub const SPEC: Limits = Limits {
        max_depth: 10,
        max_aliases: 15,
        max_root_fields: 10,
        max_tokens: 5000,
        max_complexity: 1000,
        default_list_size: 10,
        introspection: false,
    };
}

/// Why a query was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    DepthLimit,
    AliasLimit,
    RootFieldLimit,
    TokenLimit,
    ComplexityLimit,
    IntrospectionDisabled,
    ParseError,
}

impl Code {
    /// The problem code, e.g. `"DEPTH_LIMIT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::DepthLimit => "DEPTH_LIMIT",
            Code::AliasLimit => "ALIAS_LIMIT",
            Code::RootFieldLimit => "ROOT_FIELD_LIMIT",
            Code::TokenLimit => "TOKEN_LIMIT",
            Code::ComplexityLimit => "COMPLEXITY_LIMIT",
            Code::IntrospectionDisabled => "INTROSPECTION_DISABLED",
            Code::ParseError => "PARSE_ERROR",
        }
    }

    /// The `reason` label of the rejection metric.
    pub fn reason(self) -> &'static str {
        match self {
            Code::DepthLimit => "depth",
            Code::AliasLimit => "aliases",
            Code::RootFieldLimit => "root_fields",
            Code::TokenLimit => "tokens",
            Code::ComplexityLimit => "complexity",
            Code::IntrospectionDisabled => "introspection",
            Code::ParseError => "parse_error",
        }
    }
}

/// A refusal: its code and a message for the client, which repeats at most
/// 100 bytes of the client's text (a name, a parser excerpt), quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: Code,
    pub message: String,
}

/// The figures of an accepted operation, fragments expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    pub depth: usize,
    pub aliases: usize,
    pub root_fields: usize,
    pub tokens: usize,
    pub complexity: u64,
    pub introspection: bool,
}

fn reject(code: Code, message: impl Into<String>) -> Rejection {
    let message = message.into();
    Rejection { code, message }
}

fn parse_error(message: impl Into<String>) -> Rejection {
    reject(Code::ParseError, message)
}

/// At most [`ECHO`] bytes of `s`, cut on a character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(ECHO);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn syntax_error(e: &apollo_parser::Error) -> Rejection {
    parse_error(format!(
        "syntax error at byte {}: {:?}",
        e.index(),
        clip(e.message())
    ))
}

fn too_many_items(raw_limit: usize) -> Rejection {
    let msg = format!(
        "query has more than {raw_limit} lexical items (tokens, whitespace, commas, comments)"
    );
    reject(Code::TokenLimit, msg)
}

/// Analyse the operation of `query` that will run: the one named
/// `operation_name`, or the only one. `variables` are the request's (for
/// `first: $n`).
///
/// Rules, and why:
/// - **Tokens** are the GraphQL spec's tokens (punctuators, names, numbers,
///   strings), as graphql-js's `maxTokens` counts them: whitespace, commas and
///   comments are "ignored tokens", so formatting does not change a query's
///   figure. They are bounded apart (5 lexical items per allowed token, plus
///   1024); past that the query is TOKEN_LIMIT too. `Measured::tokens` is the
///   count of significant tokens.
/// - **Order.** The first failing check wins: TOKEN_LIMIT or PARSE_ERROR
///   (whichever the lexer meets first; then syntax, operation and fragment
///   errors), INTROSPECTION_DISABLED, DEPTH_LIMIT, ALIAS_LIMIT,
///   ROOT_FIELD_LIMIT, COMPLEXITY_LIMIT. One exception: selection sets nested
///   more than 128 deep are DEPTH_LIMIT from the lexer pass, and the query is
///   not parsed (its syntax errors, if any, are not reported). List and
///   object values nested past the parser's 128 levels are PARSE_ERROR.
/// - **Operation.** With `operation_name` (an empty one counts as none), the
///   operation of that name, which must exist once; without, the document's
///   only operation. No operation, several without a name, an unknown or
///   repeated name, a repeated fragment name, or a type system definition in
///   the document: PARSE_ERROR.
/// - **Fragments** of the whole document are checked: a spread of an unknown
///   fragment, or a cycle of spreads (`A -> A`, `A -> B -> A`), is
///   PARSE_ERROR. Spreads and inline fragments are expanded where they stand,
///   and a fragment spread twice counts twice (aliases, root fields,
///   complexity). Directives (`@skip`, `@include`) are ignored: everything
///   is counted as if it ran.
/// - **Depth** counts fields: a top-level field is depth 1, `{ a { b { c } } }`
///   is 3; inline fragments and spreads add nothing themselves.
/// - **Aliases**: every field written with an alias (even `a: a`).
/// - **Root fields**: the fields of the operation's top selection set, the
///   fragments at that level expanded.
/// - **Complexity**: `cost(field) = m * (1 + Σ cost(child fields))`, the
///   operation's the sum over its root fields, saturating at `u64::MAX`. `m`
///   is 1, or for a field with `first`, `last` or `limit` arguments the
///   largest of their values, each: an integer literal as written (`u64::MAX`
///   if larger); a variable's value in `variables` if it is a non-negative
///   integer (`20.0` included); for a variable absent from `variables`, its
///   default in the operation if that is a non-negative integer literal;
///   otherwise (negative, float, string, null, …) `default_list_size`. An `m`
///   of 0 counts as 1: a field costs at least itself.
/// - **`__typename`** is a field like any other (depth, cost, root fields,
///   aliases); it is not introspection.
/// - **Introspection** is any `__schema` or `__type` field in the expanded
///   operation.
pub fn analyze(
    query: &str,
    operation_name: Option<&str>,
    variables: Option<&serde_json::Value>,
    limits: &Limits,
) -> Result<Measured, Rejection> {
    let raw_limit = (limits.max_tokens.saturating_mul(RAW_PER_TOKEN)).saturating_add(RAW_SLACK);
    let tokens = scan(query, limits, raw_limit)?;
    let tree = Parser::new(query)
        .token_limit(raw_limit)
        .recursion_limit(MAX_NESTING)
        .parse();
    let mut errors = tree.errors();
    if let Some(e) = errors.clone().find(|e| e.is_limit()).or(errors.next()) {
        return Err(if !e.is_limit() {
            syntax_error(e)
        } else if e.message().contains("token") {
            too_many_items(raw_limit)
        } else {
            parse_error(format!("query nested more than {MAX_NESTING} levels deep"))
        });
    }
    let (op, fragments) = select(&tree.document(), operation_name)?;
    let (index, order) = fragment_order(&fragments)?;
    let mut walk = Walk {
        index,
        memo: vec![None; fragments.len()],
        variables: variables.and_then(Json::as_object),
        defaults: variable_defaults(&op),
        default_list_size: limits.default_list_size,
    };
    for i in order {
        if let Some(set) = fragments[i].1.selection_set() {
            walk.memo[i] = Some(walk.set(set.syntax())?);
        }
    }
    let Some(set) = op.selection_set() else {
        return Err(parse_error("the operation has no selection set"));
    };
    let s = walk.set(set.syntax())?;
    let m = Measured {
        depth: s.depth,
        aliases: s.aliases,
        root_fields: s.fields,
        tokens,
        complexity: s.cost,
        introspection: s.introspection,
    };
    check(m, limits)
}

/// The limits, in the documented order.
fn check(m: Measured, l: &Limits) -> Result<Measured, Rejection> {
    let (code, message) = if m.introspection && !l.introspection {
        let msg = "introspection (__schema, __type) is disabled".to_owned();
        (Code::IntrospectionDisabled, msg)
    } else if m.depth > l.max_depth {
        let msg = format!("query depth {} exceeds max_depth {}", m.depth, l.max_depth);
        (Code::DepthLimit, msg)
    } else if m.aliases > l.max_aliases {
        let msg = format!("{} aliases exceed max_aliases {}", m.aliases, l.max_aliases);
        (Code::AliasLimit, msg)
    } else if m.root_fields > l.max_root_fields {
        let (n, max) = (m.root_fields, l.max_root_fields);
        (
            Code::RootFieldLimit,
            format!("{n} root fields exceed max_root_fields {max}"),
        )
    } else if m.complexity > l.max_complexity {
        let (n, max) = (m.complexity, l.max_complexity);
        (
            Code::ComplexityLimit,
            format!("query complexity {n} exceeds max_complexity {max}"),
        )
    } else {
        return Ok(m);
    };
    Err(reject(code, message))
}

/// The lexer pass: the number of significant tokens, refusing more than
/// `max_tokens` of them or more than `raw_limit` lexical items, a lexical
/// error, or selection sets nested more than [`MAX_NESTING`] deep. A `{` is a
/// selection set when it is outside parentheses (arguments, variable
/// definitions), which is where every object value is.
fn scan(query: &str, limits: &Limits, raw_limit: usize) -> Result<usize, Rejection> {
    let (mut tokens, mut raw, mut parens, mut nesting, mut deepest) = (0, 0, 0, 0, 0_usize);
    for item in Lexer::new(query) {
        raw += 1;
        if raw > raw_limit {
            return Err(too_many_items(raw_limit));
        }
        let token = item.map_err(|e| syntax_error(&e))?;
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comma | TokenKind::Comment | TokenKind::Eof => {
                continue
            }
            TokenKind::LParen => parens += 1,
            TokenKind::RParen => parens = usize::saturating_sub(parens, 1),
            TokenKind::LCurly if parens == 0 => {
                nesting += 1;
                deepest = deepest.max(nesting);
            }
            TokenKind::RCurly if parens == 0 => nesting = usize::saturating_sub(nesting, 1),
            _ => {}
        }
        tokens += 1;
        if tokens > limits.max_tokens {
            let msg = format!(
                "query has more than max_tokens {} tokens",
                limits.max_tokens
            );
            return Err(reject(Code::TokenLimit, msg));
        }
    }
    if deepest > MAX_NESTING {
        let max = limits.max_depth;
        let msg = format!("selection sets nested more than {MAX_NESTING} deep (max_depth {max})");
        return Err(reject(Code::DepthLimit, msg));
    }
    Ok(tokens)
}

/// The text of a name node (never `Name::text`, which panics on a name
/// without its token; the parser reported no error, but the walk need not
/// trust that).
fn text(name: Option<cst::Name>) -> Option<String> {
    name?.ident_token().map(|t| t.text().to_owned())
}

/// The document's fragments: names and definitions.
type Fragments = Vec<(String, cst::FragmentDefinition)>;

/// The operation that will run, and the document's fragments.
fn select(
    doc: &cst::Document,
    name: Option<&str>,
) -> Result<(cst::OperationDefinition, Fragments), Rejection> {
    let name = name.filter(|n| !n.is_empty());
    let (mut ops, mut chosen, mut fragments) = (0, Vec::new(), Vec::new());
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => {
                ops += 1;
                if name.is_none() || text(op.name()).as_deref() == name {
                    chosen.push(op);
                }
            }
            cst::Definition::FragmentDefinition(f) => {
                let name = text(f.fragment_name().and_then(|n| n.name()));
                let name = name.ok_or_else(|| parse_error("a fragment has no name"))?;
                fragments.push((name, f));
            }
            _ => return Err(parse_error("the document has a type system definition")),
        }
    }
    if chosen.len() > 1 {
        return Err(parse_error(match name {
            Some(n) => format!("several operations are named {:?}", clip(n)),
            None => format!("{ops} operations and no operationName"),
        }));
    }
    match (chosen.pop(), name) {
        (Some(op), _) => Ok((op, fragments)),
        (None, Some(n)) => Err(parse_error(format!("no operation named {:?}", clip(n)))),
        (None, None) => Err(parse_error("the document has no operation")),
    }
}

/// The fragments' index by name, and an order where each fragment comes
/// after those it spreads (an iterative depth-first search: a chain of
/// thousands of fragments needs no stack). A repeated or unknown name, or a
/// cycle, is refused.
fn fragment_order(fragments: &Fragments) -> Result<(HashMap<&str, usize>, Vec<usize>), Rejection> {
    let mut index = HashMap::with_capacity(fragments.len());
    for (i, (name, _)) in fragments.iter().enumerate() {
        if index.insert(name.as_str(), i).is_some() {
            return Err(parse_error(format!(
                "fragment {:?} is defined twice",
                clip(name)
            )));
        }
    }
    let mut edges = Vec::with_capacity(fragments.len());
    for (_, def) in fragments {
        let mut names = Vec::new();
        if let Some(set) = def.selection_set() {
            spreads(set.syntax(), &mut names);
        }
        let to = names.iter().map(|name| match index.get(name.text()) {
            Some(&i) => Ok(i),
            None => Err(parse_error(format!(
                "unknown fragment {:?}",
                clip(name.text())
            ))),
        });
        edges.push(to.collect::<Result<Vec<_>, _>>()?);
    }
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let (mut state, mut order) = (
        vec![NEW; fragments.len()],
        Vec::with_capacity(fragments.len()),
    );
    for root in 0..fragments.len() {
        if state[root] != NEW {
            continue;
        }
        state[root] = ON_PATH;
        let mut path = vec![(root, 0)];
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&to) = edges[node].get(*next) else {
                state[node] = DONE;
                order.push(node);
                path.pop();
                continue;
            };
            *next += 1;
            if state[to] == NEW {
                state[to] = ON_PATH;
                path.push((to, 0));
            } else if state[to] == ON_PATH {
                let start = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..]
                    .iter()
                    .map(|&(n, _)| &*fragments[n].0)
                    .collect();
                cycle.push(&fragments[to].0);
                let cycle = cycle.join(" -> ");
                let more = if cycle.len() > ECHO { " …" } else { "" };
                return Err(parse_error(format!(
                    "fragment cycle: {}{more}",
                    clip(&cycle)
                )));
            }
        }
    }
    Ok((index, order))
}

/// The operation's variables whose default is a non-negative integer literal.
fn variable_defaults(op: &cst::OperationDefinition) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for def in op
        .variable_definitions()
        .iter()
        .flat_map(|d| d.variable_definitions())
    {
        let name = text(def.variable().and_then(|v| v.name()));
        let value = def.default_value().and_then(|d| d.value());
        if let (Some(name), Some(cst::Value::IntValue(i))) = (name, value) {
            if let Some(n) = i.int_token().and_then(|t| int_literal(t.text())) {
                out.insert(name, n);
            }
        }
    }
    out
}

/// A non-negative integer literal's value, saturating.
fn int_literal(text: &str) -> Option<u64> {
    (!text.starts_with('-')).then(|| text.parse().unwrap_or(u64::MAX))
}

/// A JSON variable as a list size: a non-negative integer (`20.0` too).
fn json_size(v: &Json) -> Option<u64> {
    let float = || v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0);
    v.as_u64().or_else(|| float().map(|f| f as u64))
}

/// The identifier of a NAME or FRAGMENT_NAME node.
fn ident(node: &SyntaxNode) -> Option<SyntaxToken> {
    node.first_token().filter(|t| t.kind() == SyntaxKind::IDENT)
}

/// The selection set of a field or an inline fragment: its last child.
fn selection_set(node: &SyntaxNode) -> Option<SyntaxNode> {
    node.last_child()
        .filter(|n| n.kind() == SyntaxKind::SELECTION_SET)
}

/// The names of the fragments spread under a selection set (recursion
/// bounded by the parser's nesting limit).
fn spreads(set: &SyntaxNode, out: &mut Vec<SyntaxToken>) {
    for selection in set.children() {
        if selection.kind() == SyntaxKind::FRAGMENT_SPREAD {
            out.extend(selection.first_child().and_then(|n| ident(&n)));
        } else if let Some(s) = selection_set(&selection) {
            spreads(&s, out);
        }
    }
}

/// The figures of a selection set, fragments expanded: `depth` relative to
/// the set (its own fields are depth 1), `fields` the set's own fields (the
/// root fields, for the operation's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Summary {
    depth: usize,
    aliases: usize,
    fields: usize,
    cost: u64,
    introspection: bool,
}

impl Summary {
    /// Another part of the same selection set: a field or a fragment.
    fn add(&mut self, o: Summary) {
        self.depth = self.depth.max(o.depth);
        self.aliases = self.aliases.saturating_add(o.aliases);
        self.fields = self.fields.saturating_add(o.fields);
        self.cost = self.cost.saturating_add(o.cost);
        self.introspection |= o.introspection;
    }
}

/// Measures selection sets, fragments from the memo.
struct Walk<'a> {
    index: HashMap<&'a str, usize>,
    memo: Vec<Option<Summary>>,
    variables: Option<&'a Map<String, Json>>,
    defaults: HashMap<String, u64>,
    default_list_size: u64,
}

impl Walk<'_> {
    /// Recursion follows nested selection sets only, which the parser held to
    /// [`MAX_NESTING`] levels; fragments are looked up, not entered. Each
    /// node's children are read once, by kind (the typed accessors would
    /// rescan them for every part of a field).
    fn set(&self, set: &SyntaxNode) -> Result<Summary, Rejection> {
        let mut sum = Summary::default();
        for selection in set.children() {
            match selection.kind() {
                SyntaxKind::FIELD => sum.add(self.field(&selection)?),
                SyntaxKind::INLINE_FRAGMENT => {
                    if let Some(s) = selection_set(&selection) {
                        sum.add(self.set(&s)?);
                    }
                }
                SyntaxKind::FRAGMENT_SPREAD => {
                    let name = selection.first_child().and_then(|n| ident(&n));
                    let name = name.as_ref().map_or("", |t| t.text());
                    match self.index.get(name).and_then(|&i| self.memo[i]) {
                        Some(fragment) => sum.add(fragment),
                        None => {
                            return Err(parse_error(format!("unknown fragment {:?}", clip(name))))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(sum)
    }

    fn field(&self, field: &SyntaxNode) -> Result<Summary, Rejection> {
        let (mut child, mut alias, mut intro, mut m) = (Summary::default(), 0, false, 1);
        for part in field.children() {
            match part.kind() {
                SyntaxKind::ALIAS => alias = 1,
                SyntaxKind::NAME => {
                    let name = ident(&part);
                    intro = name.is_some_and(|t| matches!(t.text(), "__schema" | "__type"));
                }
                SyntaxKind::ARGUMENTS => m = self.multiplier(&part),
                SyntaxKind::SELECTION_SET => child = self.set(&part)?,
                _ => {}
            }
        }
        Ok(Summary {
            depth: child.depth.saturating_add(1),
            aliases: child.aliases.saturating_add(alias),
            fields: 1,
            cost: m.saturating_mul(child.cost.saturating_add(1)),
            introspection: child.introspection || intro,
        })
    }

    /// The largest `first` / `last` / `limit` argument, at least 1.
    fn multiplier(&self, arguments: &SyntaxNode) -> u64 {
        let mut m = 1;
        for arg in arguments.children().filter_map(cst::Argument::cast) {
            let name = arg.name().and_then(|n| n.ident_token());
            if name.is_some_and(|n| matches!(n.text(), "first" | "last" | "limit")) {
                m = m.max(self.list_size(arg.value()));
            }
        }
        m
    }

    fn list_size(&self, value: Option<cst::Value>) -> u64 {
        let size = match value {
            Some(cst::Value::IntValue(i)) => i.int_token().and_then(|t| int_literal(t.text())),
            Some(cst::Value::Variable(v)) => v.name().and_then(|n| n.ident_token()).and_then(|n| {
                match self.variables.and_then(|vars| vars.get(n.text())) {
                    Some(value) => json_size(value),
                    None => self.defaults.get(n.text()).copied(),
                }
            }),
            _ => None,
        };
        size.unwrap_or(self.default_list_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const SPEC: Limits = Limits::SPEC;
    const OPEN: Limits = Limits {
        max_depth: usize::MAX,
        max_aliases: usize::MAX,
        max_root_fields: usize::MAX,
        max_tokens: usize::MAX,
        max_complexity: u64::MAX,
        default_list_size: 10,
        introspection: true,
    };

    /// The bench's typical query (benches/graphql.rs): pagination, named and
    /// inline fragments, one fragment at four levels.
    const ACCOUNT_VIEW: &str = include_str!("../../../benches/fixtures/account_view.graphql");

    fn ok(q: &str) -> Measured {
        analyze(q, None, None, &OPEN).unwrap_or_else(|r| panic!("{q}: {r:?}"))
    }
    fn refused(q: &str, limits: &Limits) -> Rejection {
        match analyze(q, None, None, limits) {
            Ok(m) => panic!("{q}: accepted {m:?}"),
            Err(r) => r,
        }
    }
    fn code(q: &str, limits: &Limits) -> Code {
        refused(q, limits).code
    }
    /// The query at exactly the limit passes, the one just over is refused.
    fn edge(at: &str, over: &str, change: fn(&mut Limits), want: Code) {
        let mut limits = OPEN;
        change(&mut limits);
        assert!(analyze(at, None, None, &limits).is_ok(), "{at}");
        assert_eq!(code(over, &limits), want, "{over}");
    }
    /// `{x{x…}}` of depth `n`.
    fn nest(n: usize) -> String {
        format!("{}{}", "{x".repeat(n), "}".repeat(n))
    }
    /// Run `f` on a 256 KiB stack: an overflow would abort the test run.
    fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let t = std::thread::Builder::new().stack_size(256 * 1024).spawn(f);
        t.unwrap().join().unwrap()
    }

    #[test]
    fn codes() {
        let all = [
            (Code::DepthLimit, "DEPTH_LIMIT", "depth"),
            (Code::AliasLimit, "ALIAS_LIMIT", "aliases"),
            (Code::RootFieldLimit, "ROOT_FIELD_LIMIT", "root_fields"),
            (Code::TokenLimit, "TOKEN_LIMIT", "tokens"),
            (Code::ComplexityLimit, "COMPLEXITY_LIMIT", "complexity"),
            (
                Code::IntrospectionDisabled,
                "INTROSPECTION_DISABLED",
                "introspection",
            ),
            (Code::ParseError, "PARSE_ERROR", "parse_error"),
        ];
        for (c, s, r) in all {
            assert_eq!((c.as_str(), c.reason()), (s, r));
        }
    }

    #[test]
    fn each_limit_at_and_over() {
        edge(
            "{a{b{c}}}",
            "{a{b{c{d}}}}",
            |l| l.max_depth = 3,
            Code::DepthLimit,
        );
        edge(
            "{x:a y:b{z:c}}",
            "{x:a y:b{z:c w:d}}",
            |l| l.max_aliases = 3,
            Code::AliasLimit,
        );
        edge(
            "{a b}",
            "{a b c}",
            |l| l.max_root_fields = 2,
            Code::RootFieldLimit,
        );
        edge("{ a }", "{ a b }", |l| l.max_tokens = 3, Code::TokenLimit);
        let (at, over) = (
            "{ u(first: 20) { id name } }",
            "{ u(first: 20) { id name x } }",
        );
        assert_eq!(ok(at).complexity, 60); // 20 * (1 + 2)
        edge(at, over, |l| l.max_complexity = 60, Code::ComplexityLimit);
        let intro = "{ __type(name: \"Q\") { name } }";
        edge(
            "{ __typename }",
            intro,
            |l| l.introspection = false,
            Code::IntrospectionDisabled,
        );
        let mut three = OPEN;
        three.max_depth = 3;
        assert_eq!(
            refused("{a{b{c{d}}}}", &three).message,
            "query depth 4 exceeds max_depth 3"
        );
        // The SPEC's own figures.
        assert_eq!(analyze(&nest(10), None, None, &SPEC).unwrap().depth, 10);
        assert_eq!(code(&nest(11), &SPEC), Code::DepthLimit);
        let vars = json!({"accountId": "acc_1", "after": null});
        let m = analyze(ACCOUNT_VIEW, Some("AccountView"), Some(&vars), &SPEC).unwrap();
        let want = Measured {
            depth: 6,
            aliases: 5,
            root_fields: 2,
            tokens: 322,
            complexity: 751,
            introspection: false,
        };
        assert_eq!(m, want);
    }

    #[test]
    fn tokens_ignore_formatting_within_a_bound() {
        assert_eq!(ok("# a comment\n{ a, b(x: 1, y: \"s\") }\n").tokens, 12);
        assert_eq!(ok("{a b(x:1 y:\"s\")}").tokens, 12);
        let commas = format!("{{ a{} }}", ",".repeat(1 << 20));
        assert_eq!(code(&commas, &SPEC), Code::TokenLimit);
    }

    #[test]
    fn check_order() {
        let mut l = SPEC;
        (l.max_depth, l.max_aliases) = (1, 0);
        assert_eq!(
            code("{ __schema { x: types { name } } }", &l),
            Code::IntrospectionDisabled
        );
        assert_eq!(code("{ a { x: b } }", &l), Code::DepthLimit);
        assert_eq!(code("{ x: a b c d e f g h i j k }", &l), Code::AliasLimit);
        l.max_aliases = 1;
        assert_eq!(
            code("{ x: a(first: 999) b c d e f g h i j k }", &l),
            Code::RootFieldLimit
        );
        l.max_tokens = 3;
        assert_eq!(code("{ a { x: b } }", &l), Code::TokenLimit);
        assert_eq!(code("{ a { x: b }", &l), Code::TokenLimit);
        assert_eq!(code("{ a", &l), Code::ParseError);
        assert_eq!(code("{ \"a", &l), Code::ParseError);
    }

    #[test]
    fn introspection_anywhere() {
        let q =
            "query { ...F } fragment F on Q { a { ... on A { t: __type(name: \"A\") { name } } } }";
        assert_eq!(code(q, &SPEC), Code::IntrospectionDisabled);
        assert!(ok(q).introspection);
        assert!(ok("{ __schema { queryType { name } } }").introspection);
        assert!(!ok("{ a { __typename } }").introspection);
        assert_eq!(ok("{ __typename a { __typename } }").complexity, 3);
    }

    #[test]
    fn parse_errors() {
        for q in [
            "",
            "{ a",
            "{ a(x: ) }",
            "query Q { a } query Q2 { b }",
            "fragment F on Q { a }",
            "type Query { a: Int }",
            "{ a } fragment F on Q { b } fragment F on Q { c }",
            "{ \"unterminated }",
            "{ a(x: [[[[1]]]]) }{",
        ] {
            assert_eq!(code(q, &OPEN), Code::ParseError, "{q}");
        }
        let r = analyze("{ a }", Some("Nope"), None, &OPEN).unwrap_err();
        assert_eq!(
            (r.code, &*r.message),
            (Code::ParseError, "no operation named \"Nope\"")
        );
        let two = "query A { a } query A { b }";
        assert_eq!(
            analyze(two, Some("A"), None, &OPEN).unwrap_err().code,
            Code::ParseError
        );
    }

    #[test]
    fn operation_name_selects() {
        let q = "query A { a } query B { b { c } } mutation C { x: d e f }";
        assert_eq!(analyze(q, Some("B"), None, &OPEN).unwrap().depth, 2);
        let c = analyze(q, Some("C"), None, &OPEN).unwrap();
        assert_eq!((c.root_fields, c.aliases), (3, 1));
        assert_eq!(
            analyze("{ a b }", Some(""), None, &OPEN)
                .unwrap()
                .root_fields,
            2
        );
        assert_eq!(
            analyze("query B { a }", Some("B"), None, &OPEN)
                .unwrap()
                .root_fields,
            1
        );
    }

    #[test]
    fn fragments_expand() {
        // Named, nested, inline, spread twice.
        let q = "query { me { ...U } other: user { ...U } }
                 fragment U on User { id n: name friends(first: 5) { ...N } ... on Admin { level } }
                 fragment N on User { nick: name }";
        let m = ok(q);
        // me > friends > nick is depth 3; aliases: other, and twice n and nick.
        assert_eq!((m.depth, m.aliases, m.root_fields), (3, 5, 2));
        // U: id 1 + n 1 + friends 5 * (1 + 1) + level 1 = 13; me, other: 14 each.
        assert_eq!(m.complexity, 28);
        // Top-level spreads and inline fragments bring their root fields.
        assert_eq!(
            ok("{ a ...F ... on Q { b c } } fragment F on Q { d e }").root_fields,
            5
        );
        // A fragment's depth counts from where it is spread.
        let q = "{ a { ...F } } fragment F on A { b { ...G } } fragment G on B { c { d } }";
        assert_eq!(ok(q).depth, 4);
    }

    #[test]
    fn fragment_cycles_and_unknown_fragments() {
        let direct = refused("{ ...A } fragment A on Q { a ...A }", &OPEN);
        assert_eq!(
            (direct.code, &*direct.message),
            (Code::ParseError, "fragment cycle: A -> A")
        );
        let indirect =
            "{ ...A } fragment A on Q { a { ...B } } fragment B on Q { ... on Q { ...C } }
                        fragment C on Q { ...A }";
        assert_eq!(
            refused(indirect, &OPEN).message,
            "fragment cycle: A -> B -> C -> A"
        );
        let unknown = refused("{ ...Missing }", &OPEN);
        assert_eq!(
            (unknown.code, &*unknown.message),
            (Code::ParseError, "unknown fragment \"Missing\"")
        );
        assert_eq!(
            code("{ a } fragment F on Q { ...G }", &OPEN),
            Code::ParseError
        );
    }

    #[test]
    fn list_sizes() {
        let cost = |q: &str, vars: serde_json::Value| {
            analyze(q, None, Some(&vars), &OPEN).unwrap().complexity
        };
        let q = "query($n: Int) { items(first: $n) { id } }";
        assert_eq!(cost(q, json!({"n": 5})), 10);
        assert_eq!(cost(q, json!({"n": 5.0})), 10);
        assert_eq!(cost(q, json!({})), 20); // default_list_size 10
        for bad in [
            json!({"n": -1}),
            json!({"n": 2.5}),
            json!({"n": "5"}),
            json!(null),
        ] {
            assert_eq!(cost(q, bad), 20);
        }
        let d = "query($n: Int = 7) { items(last: $n) { id } }";
        assert_eq!(cost(d, json!({})), 14);
        assert_eq!(cost(d, json!({"n": null})), 20);
        assert_eq!(cost(d, json!({"n": 3})), 6);
        assert_eq!(
            cost("{ items(limit: 3, first: 4, last: 2) { id } }", json!({})),
            8
        );
        assert_eq!(cost("{ items(first: 0) { id } }", json!({})), 2);
        assert_eq!(cost("{ items(first: -3) { id } }", json!({})), 20);
        assert_eq!(cost("{ items(first: 2.5) { id } }", json!({})), 20);
        assert_eq!(cost("{ items(after: 99) { id } }", json!({})), 2);
        assert_eq!(
            cost(
                "{ items(first: 99999999999999999999999) { id } }",
                json!({})
            ),
            u64::MAX
        );
        // Multipliers compose through fragments.
        let f = "query($n: Int) { a(first: 10) { ...F } } fragment F on A { b(first: $n) { c } }";
        assert_eq!(cost(f, json!({"n": 3})), 10 * (1 + 3 * 2));
        assert_eq!(
            code("{ a(first: 100) { b(first: 100) { c } } }", &SPEC),
            Code::ComplexityLimit
        );
    }

    #[test]
    fn fragment_blowup_is_linear_and_saturates() {
        // F0 has one aliased field; Fi spreads F(i-1) twice: 2^80 fields.
        let mut q = String::from("{ ...F80 } fragment F0 on Q { x: a(first: 1000) }");
        for i in 1..=80 {
            q.push_str(&format!(
                " fragment F{i} on Q {{ ...F{} ...F{} }}",
                i - 1,
                i - 1
            ));
        }
        let t = Instant::now();
        let m = ok(&q);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(
            (m.aliases, m.root_fields, m.complexity),
            (usize::MAX, usize::MAX, u64::MAX)
        );
        assert_eq!(code(&q, &SPEC), Code::AliasLimit);
        // A chain of 20 000 fragments needs no stack.
        let mut chain = String::from("{ ...F0 }");
        for i in 0..20_000 {
            chain.push_str(&format!(
                " fragment F{i} on Q {{ a{i} {{ ...F{} }} }}",
                i + 1
            ));
        }
        chain.push_str(" fragment F20000 on Q { z }");
        assert_eq!(small_stack(move || ok(&chain)).depth, 20_001);
    }

    #[test]
    fn hostile_nesting_is_refused_quickly_on_a_small_stack() {
        let deep = "{a".repeat(100_000) + &"}".repeat(100_000);
        let lists = format!(
            "{{ a(x: {}1{}) }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let objects = format!(
            "{{ a(x: {}1{}) }}",
            "{a:".repeat(100_000),
            "}".repeat(100_000)
        );
        let types = format!(
            "query($v: {}Int{}) {{ a }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let t = Instant::now();
        let codes = small_stack(move || {
            let open = [&deep, &lists, &objects, &types].map(|q| code(q, &OPEN));
            (code(&deep, &SPEC), open)
        });
        let want = [
            Code::DepthLimit,
            Code::ParseError,
            Code::ParseError,
            Code::ParseError,
        ];
        assert_eq!(codes, (Code::TokenLimit, want));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // At the ceiling the query is parsed and measured exactly.
        assert_eq!(small_stack(|| ok(&nest(MAX_NESTING)).depth), MAX_NESTING);
        assert_eq!(code(&nest(MAX_NESTING + 1), &OPEN), Code::DepthLimit);
    }

    #[test]
    fn one_mebibyte_is_refused_quickly() {
        let mut q = String::from("{");
        for i in 0.. {
            if q.len() >= 1 << 20 {
                break;
            }
            q.push_str(&format!(" a{i}: f"));
        }
        q.push('}');
        let t = Instant::now();
        assert_eq!(code(&q, &SPEC), Code::TokenLimit);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        let mut aliases = OPEN;
        aliases.max_aliases = 15;
        assert_eq!(small_stack(move || code(&q, &aliases)), Code::AliasLimit);
    }

    #[test]
    fn messages_echo_at_most_100_bytes() {
        let long = "N".repeat(10_000);
        let r = analyze("{ a }", Some(&long), None, &OPEN).unwrap_err();
        assert!(r.message.len() < 150, "{}", r.message);
        for q in [
            format!("{{ a(x: \"{}) }}", "é".repeat(5000)),
            format!("{{ ...{long} }} fragment {long} on Q {{ ...{long} }}"),
            format!("{{ ...{long} }}"),
            format!("{{ a({long}: ) }}"),
        ] {
            let r = refused(&q, &OPEN);
            assert!(r.message.len() < 150, "{}", r.message);
        }
    }

    #[test]
    fn mangled_input_never_panics() {
        let base = "query Q($n: Int = 3, $f: [In!]) { a: user(id: \"1\", first: $n) { ...F \
                    ... on B @skip(if: true) { c(x: [1, {y: 2}]) } } } \
                    fragment F on U { __typename x: y }";
        for end in (0..base.len()).filter(|&e| base.is_char_boundary(e)) {
            let _ = analyze(&base[..end], Some("Q"), None, &SPEC);
        }
        let alphabet = b"{}()[]:$@!.=,\"# \na_1-";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut q = base.as_bytes().to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % q.len() as u64) as usize;
                q[at] = alphabet[(seed >> 32) as usize % alphabet.len()];
            }
            let q = String::from_utf8(q).unwrap();
            let _ = analyze(&q, None, Some(&json!({"n": 2})), &SPEC);
        }
    }

    /// An independent walker over graphql-parser's AST, expanding fragments
    /// naively: (depth, aliases, root fields, complexity with literal list
    /// sizes, 10 for others).
    fn reference(q: &str, name: Option<&str>) -> (usize, usize, usize, u64) {
        use graphql_parser::query::{Definition as D, OperationDefinition as O, Selection, Value};
        type Set = graphql_parser::query::SelectionSet<'static, String>;
        type Field = graphql_parser::query::Field<'static, String>;
        type Frags = HashMap<String, Set>;
        fn fields<'s>(set: &'s Set, frags: &'s Frags, out: &mut Vec<&'s Field>) {
            for s in &set.items {
                match s {
                    Selection::Field(f) => out.push(f),
                    Selection::InlineFragment(i) => fields(&i.selection_set, frags, out),
                    Selection::FragmentSpread(s) => fields(&frags[&s.fragment_name], frags, out),
                }
            }
        }
        fn measure(set: &Set, frags: &Frags) -> (usize, usize, usize, u64) {
            let mut all = Vec::new();
            fields(set, frags, &mut all);
            let (mut depth, mut aliases, mut cost) = (0, 0, 0);
            for f in &all {
                let (d, a, _, c) = measure(&f.selection_set, frags);
                let sizes = f
                    .arguments
                    .iter()
                    .filter(|(n, _)| ["first", "last", "limit"].contains(&n.as_str()));
                let size = |v: &Value<_>| {
                    if let Value::Int(n) = v {
                        n.as_i64().unwrap() as u64
                    } else {
                        10
                    }
                };
                let m = sizes.map(|(_, v)| size(v)).max().unwrap_or(1).max(1);
                depth = depth.max(1 + d);
                aliases += a + usize::from(f.alias.is_some());
                cost += m * (1 + c);
            }
            (depth, aliases, all.len(), cost)
        }
        let doc = graphql_parser::parse_query::<String>(q)
            .unwrap()
            .into_static();
        let (mut frags, mut ops) = (Frags::new(), Vec::new());
        for d in doc.definitions {
            match d {
                D::Fragment(f) => drop(frags.insert(f.name, f.selection_set)),
                D::Operation(O::SelectionSet(s)) => ops.push((None, s)),
                D::Operation(O::Query(q)) => ops.push((q.name, q.selection_set)),
                D::Operation(O::Mutation(m)) => ops.push((m.name, m.selection_set)),
                D::Operation(O::Subscription(s)) => ops.push((s.name, s.selection_set)),
            }
        }
        let op = ops
            .iter()
            .find(|o| name.is_none() || o.0.as_deref() == name)
            .unwrap();
        measure(&op.1, &frags)
    }

    #[test]
    fn agrees_with_graphql_parser() {
        let feed = "query A { x } query Feed($c: String) {
              feed(first: 10, after: $c) {
                edges { node { ...Post ... on Video { url } } } pageInfo { hasNextPage } } }
            fragment Post on Post {
              id title author { ...Person } comments(last: 2) { body by: author { ...Person } } }
            fragment Person on User { id name avatar(size: 64) }";
        let likes = "mutation { a: like(id: 1) { likes } b: like(id: 2) { likes }
            c: unlike(id: 3) { ...L } }
            fragment L on Post { likes liked: viewerHasLiked }";
        let viewer = "{ __typename a: viewer { login repositories(first: 3) { nodes { name } } } }";
        let queries = [
            (ACCOUNT_VIEW, None),
            (feed, Some("Feed")),
            (likes, None),
            (viewer, None),
        ];
        for (q, name) in queries {
            let m = analyze(q, name, None, &OPEN).unwrap();
            assert_eq!(
                (m.depth, m.aliases, m.root_fields, m.complexity),
                reference(q, name),
                "{q}"
            );
        }
    }
}
