//! GraphQL query analysis for the `graphql` plugin (SPEC §14): measure the
//! operation that will run — depth, aliases, root fields, tokens, complexity,
//! introspection — and refuse it when it is over a limit.
//!
//! The work is linear in the size of the query and bounded in stack:
//!
//! 1. A lexer pass ([`scan`]) counts significant tokens and the nesting of
//!    selection sets before anything is parsed, so a hostile `{a{a{a…` or a
//!    megabyte of aliases costs at most `max_tokens` tokens of lexing.
//! 2. apollo-parser builds the syntax tree under a token limit and a recursion
//!    limit of [`MAX_NESTING`], so neither it nor the walk below (whose
//!    recursion follows the tree's selection sets) can descend without bound.
//! 3. Fragments are checked for unknown names and cycles, ordered by an
//!    iterative depth-first search, and each one is measured once; a spread
//!    then adds its fragment's memoised [`Summary`]. A fragment spread twice
//!    at each of forty levels is measured in forty steps, and its 2^40 fields
//!    are counted with saturating arithmetic.

use std::collections::HashMap;

use apollo_parser::cst::{self, CstNode};
use apollo_parser::{Lexer, Parser, SyntaxKind, SyntaxNode, SyntaxToken, TokenKind};
use serde_json::{Map, Value as Json};

/// How deep selection sets (and, in the parser, list and object values and
/// list types, on the same count) may nest at all. The parser needs about
/// 0.8 KiB of stack a level in a debug build and 0.2 KiB in release, so 128
/// stays far inside any thread's stack. A `max_depth` above 128 is therefore
/// effectively 128.
const MAX_NESTING: usize = 128;
/// Ignored tokens (whitespace, commas, comments) do not count against
/// `max_tokens`, but they are not free to lex and store: a query may have at
/// most this many lexical items per allowed token, plus [`RAW_SLACK`].
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
    /// The problem code of the refusal, e.g. `"DEPTH_LIMIT"`.
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

/// A refusal: its code and a message for the client. The message repeats at
/// most 100 bytes of the client's text (names, parser excerpts), escaped.
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
    Rejection {
        code,
        message: message.into(),
    }
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

/// Analyse the operation of `query` that will run: the one named
/// `operation_name`, or the only one. `variables` are the request's (for
/// `first: $n`).
///
/// Rules, and why:
/// - **Tokens** are the GraphQL spec's tokens (punctuators, names, numbers,
///   strings), as graphql-js's `maxTokens` counts them: whitespace, commas and
///   comments are "ignored tokens" and do not count, so formatting a query
///   does not change its figure. They are bounded separately (5 lexical items
///   per allowed token plus 1024) and past that the query is `TOKEN_LIMIT`
///   too. `Measured::tokens` is the significant count.
/// - **Order.** Refusals are checked in this order, the first failing one
///   wins: TOKEN_LIMIT / PARSE_ERROR (whichever comes first in the text;
///   fragment errors after syntax), INTROSPECTION_DISABLED, DEPTH_LIMIT,
///   ALIAS_LIMIT, ROOT_FIELD_LIMIT, COMPLEXITY_LIMIT. One exception: selection
///   sets nested more than 128 deep are DEPTH_LIMIT straight from the lexer
///   pass (when the token count is within limits), without parsing — syntax
///   errors elsewhere in such a query are not looked for. List and object
///   values nested past the parser's 128 levels are PARSE_ERROR.
/// - **Operation.** With `operation_name` (an empty name counts as none) the
///   operation of that name, which must exist once; without, the document's
///   only operation. No operation, several without a name, an unknown or
///   repeated name, a repeated fragment name, or a type-system definition in
///   the document are PARSE_ERROR.
/// - **Fragments** of the whole document are checked: a spread of an unknown
///   fragment, or a cycle of spreads (`A -> A`, `A -> B -> A`), is
///   PARSE_ERROR. Spreads and inline fragments are expanded where they stand;
///   a fragment spread twice counts twice everywhere (aliases, root fields,
///   complexity). Directives (`@skip`, `@include`) are ignored: every
///   selection is counted, as if it would run.
/// - **Depth** counts fields: a top-level field is depth 1, `{ a { b { c } } }`
///   is 3; inline fragments and spreads add nothing themselves.
/// - **Aliases**: every field written with an alias (even `a: a`).
/// - **Root fields**: the fields of the operation's top selection set after
///   expanding the fragments at that level.
/// - **Complexity**: `cost(field) = m * (1 + Σ cost(child fields))`, the
///   operation's being the sum over its root fields, all saturating at
///   `u64::MAX`. `m` is 1 unless the field has a `first`, `last` or `limit`
///   argument; then it is the largest of their values, each: an integer
///   literal as written (above `u64::MAX`: `u64::MAX`); a variable's value in
///   `variables` if that is a non-negative integer (`20.0` included), else
///   the variable's default in the operation if it is absent from
///   `variables` and its default is such an integer literal, else
///   `default_list_size`; anything else (negative, float, string, null, …)
///   `default_list_size`. An `m` of 0 counts as 1: a field always costs at
///   least itself.
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
    let raw_limit = limits
        .max_tokens
        .saturating_mul(RAW_PER_TOKEN)
        .saturating_add(RAW_SLACK);
    let tokens = scan(query, limits.max_tokens, raw_limit)?;
    let tree = Parser::new(query)
        .token_limit(raw_limit)
        .recursion_limit(MAX_NESTING)
        .parse();
    let mut errors = tree.errors();
    if let Some(e) = errors.clone().find(|e| e.is_limit()).or(errors.next()) {
        return Err(if !e.is_limit() {
            parse_error(format!(
                "syntax error at byte {}: {}",
                e.index(),
                clip(e.message())
            ))
        } else if e.message().contains("token") {
            reject(
                Code::TokenLimit,
                format!("query has more than {raw_limit} lexical tokens"),
            )
        } else {
            parse_error(format!("query nested more than {MAX_NESTING} levels deep"))
        });
    }
    let doc = tree.document();
    let (op, fragments) = select(&doc, operation_name)?;
    let order = fragment_order(&fragments)?;
    let mut walk = Walk {
        index: fragments
            .iter()
            .enumerate()
            .map(|(i, f)| (f.0.clone(), i))
            .collect(),
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
    let s = match op.selection_set() {
        Some(set) => walk.set(set.syntax())?,
        None => return Err(parse_error("the operation has no selection set")),
    };
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
    if m.introspection && !l.introspection {
        return Err(reject(
            Code::IntrospectionDisabled,
            "introspection (__schema, __type) is disabled",
        ));
    }
    if m.depth > l.max_depth {
        let msg = format!("query depth {} exceeds max_depth {}", m.depth, l.max_depth);
        return Err(reject(Code::DepthLimit, msg));
    }
    if m.aliases > l.max_aliases {
        let msg = format!(
            "query has {} aliases, over max_aliases {}",
            m.aliases, l.max_aliases
        );
        return Err(reject(Code::AliasLimit, msg));
    }
    if m.root_fields > l.max_root_fields {
        let msg = format!(
            "query has {} root fields, over max_root_fields {}",
            m.root_fields, l.max_root_fields
        );
        return Err(reject(Code::RootFieldLimit, msg));
    }
    if m.complexity > l.max_complexity {
        let msg = format!(
            "query complexity {} exceeds max_complexity {}",
            m.complexity, l.max_complexity
        );
        return Err(reject(Code::ComplexityLimit, msg));
    }
    Ok(m)
}

/// The lexer pass: the number of significant tokens, refusing more than
/// `max_tokens` of them or more than `raw_limit` lexical items, a lexical
/// error, or selection sets nested more than [`MAX_NESTING`] deep. A `{` is a
/// selection set when it is outside parentheses (arguments, variable
/// definitions), which is where every object value lives.
fn scan(query: &str, max_tokens: usize, raw_limit: usize) -> Result<usize, Rejection> {
    let (mut tokens, mut raw, mut parens, mut nesting, mut deepest) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    for item in Lexer::new(query) {
        raw += 1;
        if raw > raw_limit {
            let msg = format!("query has more than {raw_limit} lexical tokens");
            return Err(reject(Code::TokenLimit, msg));
        }
        let token = item.map_err(|e| {
            parse_error(format!(
                "syntax error at byte {}: {}",
                e.index(),
                clip(e.message())
            ))
        })?;
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Comma | TokenKind::Comment | TokenKind::Eof => {
                continue
            }
            TokenKind::LParen => parens += 1,
            TokenKind::RParen => parens = parens.saturating_sub(1),
            TokenKind::LCurly if parens == 0 => {
                nesting += 1;
                deepest = deepest.max(nesting);
            }
            TokenKind::RCurly if parens == 0 => nesting = nesting.saturating_sub(1),
            _ => {}
        }
        tokens += 1;
        if tokens > max_tokens {
            let msg = format!("query has more than max_tokens {max_tokens} tokens");
            return Err(reject(Code::TokenLimit, msg));
        }
    }
    if deepest > MAX_NESTING {
        let msg = format!("selection sets nested more than {MAX_NESTING} deep");
        return Err(reject(Code::DepthLimit, msg));
    }
    Ok(tokens)
}

/// The text of a name node, if it has one (it always has once the parser
/// reported no error; never `Name::text`, which panics otherwise).
fn text(name: Option<cst::Name>) -> Option<String> {
    name?.ident_token().map(|t| t.text().to_owned())
}

/// The fragments, by name and definition.
type Fragments = Vec<(String, cst::FragmentDefinition)>;

/// The operation that will run, and the document's fragments.
fn select(
    doc: &cst::Document,
    name: Option<&str>,
) -> Result<(cst::OperationDefinition, Fragments), Rejection> {
    let name = name.filter(|n| !n.is_empty());
    let (mut ops, mut named, mut fragments) = (0usize, Vec::new(), Vec::new());
    let mut only = None;
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => {
                ops += 1;
                let op_name = text(op.name());
                if name.is_some() && op_name.as_deref() == name {
                    named.push(op);
                } else if name.is_none() {
                    only = Some(op);
                }
            }
            cst::Definition::FragmentDefinition(f) => {
                let Some(n) = text(f.fragment_name().and_then(|n| n.name())) else {
                    return Err(parse_error("a fragment has no name"));
                };
                fragments.push((n, f));
            }
            _ => return Err(parse_error("the document has a type system definition")),
        }
    }
    let op = match name {
        Some(n) if named.len() > 1 => {
            return Err(parse_error(format!(
                "several operations named {:?}",
                clip(n)
            )))
        }
        Some(n) => named
            .pop()
            .ok_or_else(|| parse_error(format!("no operation named {:?}", clip(n))))?,
        None if ops > 1 => {
            return Err(parse_error(format!(
                "{ops} operations and no operationName"
            )))
        }
        None => only.ok_or_else(|| parse_error("the document has no operation"))?,
    };
    Ok((op, fragments))
}

/// The fragments in an order where each comes after those it spreads (an
/// iterative depth-first search, so a chain of thousands of fragments needs
/// no stack). A repeated or unknown name, or a cycle, is refused.
fn fragment_order(fragments: &Fragments) -> Result<Vec<usize>, Rejection> {
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
        let mut to = Vec::new();
        let mut found = Vec::new();
        if let Some(set) = def.selection_set() {
            spreads(set.syntax(), &mut found);
        }
        for name in &found {
            match index.get(name.text()) {
                Some(&i) => to.push(i),
                None => return Err(parse_error(format!("unknown fragment {:?}", clip(name.text())))),
            }
        }
        edges.push(to);
    }
    // 0: not seen, 1: on the path, 2: done.
    let (mut state, mut order) = (
        vec![0u8; fragments.len()],
        Vec::with_capacity(fragments.len()),
    );
    for root in 0..fragments.len() {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        let mut path = vec![(root, 0usize)];
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let Some(&to) = edges[node].get(*next) else {
                state[node] = 2;
                order.push(node);
                path.pop();
                continue;
            };
            *next += 1;
            match state[to] {
                0 => {
                    state[to] = 1;
                    path.push((to, 0));
                }
                1 => {
                    let start = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..]
                        .iter()
                        .map(|&(n, _)| fragments[n].0.as_str())
                        .collect();
                    cycle.push(&fragments[to].0);
                    let cycle = cycle.join(" -> ");
                    let more = if cycle.len() > ECHO { " …" } else { "" };
                    return Err(parse_error(format!(
                        "fragment cycle: {}{more}",
                        clip(&cycle)
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(order)
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

/// A JSON variable value used as a list size: a non-negative integer.
fn json_size(v: &Json) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

/// The figures of a selection set, fragments expanded. `depth` is relative
/// to the set (its own fields are at depth 1), `fields` counts the set's own
/// fields (the root fields, for the operation's set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Summary {
    depth: usize,
    aliases: usize,
    fields: usize,
    cost: u64,
    introspection: bool,
}

impl Summary {
    /// Another part of the same selection set (a field, or an expanded
    /// fragment).
    fn add(&mut self, o: Summary) {
        self.depth = self.depth.max(o.depth);
        self.aliases = self.aliases.saturating_add(o.aliases);
        self.fields = self.fields.saturating_add(o.fields);
        self.cost = self.cost.saturating_add(o.cost);
        self.introspection |= o.introspection;
    }
}

/// Measures selection sets against the memoised fragments.
struct Walk<'a> {
    index: HashMap<String, usize>,
    memo: Vec<Option<Summary>>,
    variables: Option<&'a Map<String, Json>>,
    defaults: HashMap<String, u64>,
    default_list_size: u64,
}

impl Walk<'_> {
    /// Recursion follows nested selection sets only, which the parser held to
    /// [`MAX_NESTING`] levels; fragments are not entered but looked up. The
    /// walk reads each node's children once, by kind, rather than through
    /// the typed accessors (each of which rescans the children).
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
                        Some(frag) => sum.add(frag),
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
                    intro = ident(&part).is_some_and(|t| matches!(t.text(), "__schema" | "__type"))
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

    /// The largest `first` / `last` / `limit` of a field's arguments, at
    /// least 1.
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
            Some(cst::Value::Variable(v)) => {
                let name = v.name().and_then(|n| n.ident_token());
                name.and_then(|name| {
                    match self.variables.and_then(|vars| vars.get(name.text())) {
                        Some(value) => json_size(value),
                        None => self.defaults.get(name.text()).copied(),
                    }
                })
            }
            _ => None,
        };
        size.unwrap_or(self.default_list_size)
    }
}

/// The identifier of a NAME or FRAGMENT_NAME node.
fn ident(node: &SyntaxNode) -> Option<SyntaxToken> {
    node.first_token().filter(|t| t.kind() == SyntaxKind::IDENT)
}

/// The selection set of a field or an inline fragment: always its last child.
fn selection_set(node: &SyntaxNode) -> Option<SyntaxNode> {
    node.last_child().filter(|n| n.kind() == SyntaxKind::SELECTION_SET)
}

/// The fragment spreads under a selection set, in order.
fn spreads(set: &SyntaxNode, out: &mut Vec<SyntaxToken>) {
    for selection in set.children() {
        match selection.kind() {
            SyntaxKind::FRAGMENT_SPREAD => {
                out.extend(selection.first_child().and_then(|n| ident(&n)));
            }
            SyntaxKind::FIELD | SyntaxKind::INLINE_FRAGMENT => {
                if let Some(s) = selection_set(&selection) {
                    spreads(&s, out);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const SPEC: Limits = Limits {
        max_depth: 10,
        max_aliases: 15,
        max_root_fields: 10,
        max_tokens: 5000,
        max_complexity: 1000,
        default_list_size: 10,
        introspection: false,
    };
    const OPEN: Limits = Limits {
        max_depth: usize::MAX,
        max_aliases: usize::MAX,
        max_root_fields: usize::MAX,
        max_tokens: usize::MAX,
        max_complexity: u64::MAX,
        default_list_size: 10,
        introspection: true,
    };

    /// A typical application query (the bench's): pagination, named and
    /// inline fragments, a fragment used at several levels.
    const ACCOUNT_VIEW: &str = r#"
# Account screen: header, balances, the first page of transactions.
query AccountView($accountId: ID!, $after: String, $withStatements: Boolean = true) {
  viewer {
    id
    ...UserSummary
    preferences { locale currency timezone }
    kyc { status level verifiedAt }
    rewards { points tier { name perks expiresAt } referralCode }
    security { twoFactorEnabled lastLoginAt devices { id name lastSeenAt } }
    notifications(first: 5, unreadOnly: true) {
      edges { node { id title read createdAt } }
    }
  }
  account(id: $accountId) {
    ...AccountHeader
    balance { available { ...Money } pending { ...Money } }
    limits { daily { ...Money } monthly { ...Money } }
    transactions(first: 20, after: $after) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges {
        cursor
        node {
          ...TransactionRow
          ... on CardTransaction {
            card { last4 brand }
            merchant { name category logoUrl }
          }
          ... on Transfer {
            counterparty { name iban }
            reference
          }
        }
      }
    }
    statements(last: 3) @include(if: $withStatements) { id month url }
    scheduledPayments(first: 5) {
      id
      dueAt
      amount { ...Money }
      payee { name iban }
    }
    cards { id last4 status frozen spendLimit: limits { daily { ...Money } } }
    overdraft { enabled rate limit { ...Money } }
    beneficiaries { id name iban bank { name bic country } }
    documents { id kind title url issuedAt }
  }
}

fragment UserSummary on User {
  displayName: name
  email
  avatar(size: 64)
}

fragment AccountHeader on Account {
  id
  iban
  nickname: label
  openedAt
  owner { ...UserSummary }
}

fragment Money on Money {
  amount
  currency
}

fragment TransactionRow on Transaction {
  id
  bookedAt: createdAt
  description
  amount { ...Money }
  status
  category { id name }
}
"#;

    #[test]
    fn account_view_figures() {
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

    fn ok(q: &str) -> Measured {
        analyze(q, None, None, &OPEN).unwrap_or_else(|r| panic!("{q}: {r:?}"))
    }
    fn code(q: &str, limits: &Limits) -> Code {
        match analyze(q, None, None, limits) {
            Ok(m) => panic!("{q}: accepted {m:?}"),
            Err(r) => r.code,
        }
    }
    /// The query at exactly the limit passes, the one just over is refused.
    fn edge(at: &str, over: &str, limits: Limits, want: Code) {
        assert!(analyze(at, None, None, &limits).is_ok(), "{at}");
        assert_eq!(code(over, &limits), want, "{over}");
    }
    /// Run `f` on a 256 KiB stack: a stack overflow would abort the test.
    fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap();
        t.join().unwrap()
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
        let l = |f: fn(&mut Limits)| {
            let mut l = OPEN;
            f(&mut l);
            l
        };
        edge(
            "{a{b{c}}}",
            "{a{b{c{d}}}}",
            l(|l| l.max_depth = 3),
            Code::DepthLimit,
        );
        edge(
            "{x:a y:b{z:c}}",
            "{x:a y:b{z:c w:d}}",
            l(|l| l.max_aliases = 3),
            Code::AliasLimit,
        );
        edge(
            "{a b}",
            "{a b c}",
            l(|l| l.max_root_fields = 2),
            Code::RootFieldLimit,
        );
        edge(
            "{ a }",
            "{ a b }",
            l(|l| l.max_tokens = 3),
            Code::TokenLimit,
        );
        let q = "{ users(first: 20) { id name } }"; // 20 * (1 + 2)
        assert_eq!(ok(q).complexity, 60);
        edge(
            q,
            "{ users(first: 20) { id name x } }",
            l(|l| l.max_complexity = 60),
            Code::ComplexityLimit,
        );
        edge(
            "{ __typename }",
            "{ __type(name: \"Q\") { name } }",
            l(|l| l.introspection = false),
            Code::IntrospectionDisabled,
        );
        let r = analyze("{a{b{c{d}}}}", None, None, &l(|l| l.max_depth = 3)).unwrap_err();
        assert_eq!(r.message, "query depth 4 exceeds max_depth 3");
        // The SPEC defaults: depth 10 passes, 11 does not.
        let nest = |n: usize| format!("{}{}", "{x".repeat(n), "}".repeat(n));
        assert_eq!(analyze(&nest(10), None, None, &SPEC).unwrap().depth, 10);
        assert_eq!(code(&nest(11), &SPEC), Code::DepthLimit);
    }

    #[test]
    fn tokens_ignore_formatting() {
        let m = ok("# a comment\n{ a, b(x: 1, y: \"s\") }\n");
        assert_eq!(m.tokens, 12);
        assert_eq!(ok("{a b(x:1 y:\"s\")}").tokens, 12);
        // Ignored tokens are bounded too: 1 MiB of commas.
        let commas = format!("{{ a{} }}", ",".repeat(1 << 20));
        assert_eq!(code(&commas, &SPEC), Code::TokenLimit);
    }

    #[test]
    fn check_order() {
        let mut l = SPEC;
        l.max_depth = 1;
        l.max_aliases = 0;
        assert_eq!(
            code("{ __schema { x: types { name } } }", &l),
            Code::IntrospectionDisabled
        );
        assert_eq!(code("{ a { x: b } }", &l), Code::DepthLimit);
        l.max_tokens = 3;
        assert_eq!(code("{ a { x: b } }", &l), Code::TokenLimit);
        assert_eq!(code("{ a { x: b }", &l), Code::TokenLimit);
        assert_eq!(code("{ a", &l), Code::ParseError);
    }

    #[test]
    fn introspection_anywhere() {
        let q = "query { ...F } fragment F on Query { a { ... on A { __type(name: \"A\") { name } } } }";
        assert_eq!(code(q, &SPEC), Code::IntrospectionDisabled);
        assert!(ok(q).introspection);
        assert!(!ok("{ a { __typename } }").introspection);
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
            (r.code, r.message.as_str()),
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
    }

    #[test]
    fn fragments_expand() {
        // Named, nested, inline, spread twice.
        let q = "query { me { ...U } other: user { ...U } }
                 fragment U on User { id n: name friends(first: 5) { ...N } ... on Admin { level } }
                 fragment N on User { nick: name }";
        let m = ok(q);
        // me > friends > nick: depth 3; aliases: other + 2 * (n + nick).
        assert_eq!((m.depth, m.aliases, m.root_fields), (3, 5, 2));
        // U = id 1 + n 1 + friends 5 * (1 + 1) + level 1 = 13; me and other: 14 each.
        assert_eq!(m.complexity, 28);
        // Top-level spreads and inline fragments count their root fields.
        assert_eq!(
            ok("{ a ...F ... on Q { b c } } fragment F on Q { d e }").root_fields,
            5
        );
        // A spread inside a spread adds the depth of where it stands.
        assert_eq!(
            ok("{ a { ...F } } fragment F on A { b { ...G } } fragment G on B { c { d } }").depth,
            4
        );
    }

    #[test]
    fn fragment_cycles_and_unknown() {
        let direct = "{ ...A } fragment A on Q { a ...A }";
        let r = analyze(direct, None, None, &OPEN).unwrap_err();
        assert_eq!(
            (r.code, r.message.as_str()),
            (Code::ParseError, "fragment cycle: A -> A")
        );
        let indirect = "{ ...A } fragment A on Q { a { ...B } } fragment B on Q { ... on Q { ...C } } fragment C on Q { ...A }";
        let r = analyze(indirect, None, None, &OPEN).unwrap_err();
        assert_eq!(r.message, "fragment cycle: A -> B -> C -> A");
        let r = analyze("{ ...Missing }", None, None, &OPEN).unwrap_err();
        assert_eq!(
            (r.code, r.message.as_str()),
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
        assert_eq!(cost(q, json!({"n": -1})), 20);
        assert_eq!(cost(q, json!({"n": "5"})), 20);
        assert_eq!(cost(q, json!(null)), 20);
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
        let deep = format!("{}a{}", "{a".repeat(100_000), "}".repeat(100_000));
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
        let t = Instant::now();
        let codes = small_stack(move || {
            [
                code(&deep, &SPEC),
                code(&deep, &OPEN),
                code(&lists, &OPEN),
                code(&objects, &OPEN),
            ]
        });
        assert_eq!(
            codes,
            [
                Code::TokenLimit,
                Code::DepthLimit,
                Code::ParseError,
                Code::ParseError
            ]
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // At the parser's ceiling the query is parsed and measured exactly.
        let nest = |n: usize| format!("{}{}", "{a".repeat(n), "}".repeat(n));
        let at = nest(MAX_NESTING);
        assert_eq!(small_stack(move || ok(&at).depth), MAX_NESTING);
        assert_eq!(code(&nest(MAX_NESTING + 1), &OPEN), Code::DepthLimit);
    }

    #[test]
    fn one_mebibyte_is_refused_quickly() {
        let mut q = String::from("{");
        let mut i = 0;
        while q.len() < 1 << 20 {
            q.push_str(&format!(" a{i}: f"));
            i += 1;
        }
        q.push('}');
        let t = Instant::now();
        assert_eq!(code(&q, &SPEC), Code::TokenLimit);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        let mut l = OPEN;
        l.max_aliases = 15;
        assert_eq!(small_stack(move || code(&q, &l)), Code::AliasLimit);
    }

    #[test]
    fn messages_echo_at_most_100_bytes() {
        let long = "N".repeat(10_000);
        let r = analyze("{ a }", Some(&long), None, &OPEN).unwrap_err();
        assert!(r.message.len() < 150, "{}", r.message.len());
        let q = format!("{{ a(x: \"{}) }}", "é".repeat(5000));
        assert!(analyze(&q, None, None, &OPEN).unwrap_err().message.len() < 150);
        let q = format!("{{ ...{long} }} fragment {long} on Q {{ ...{long} }}");
        assert!(analyze(&q, None, None, &OPEN).unwrap_err().message.len() < 150);
    }

    #[test]
    fn mangled_input_never_panics() {
        let base = "query Q($n: Int = 3, $f: [In!]) { a: user(id: \"1\", first: $n) { ...F ... on B @skip(if: true) { c(x: [1, {y: 2}]) } } } fragment F on U { __typename x: y }";
        for end in (0..base.len()).filter(|&e| base.is_char_boundary(e)) {
            let _ = analyze(&base[..end], Some("Q"), None, &SPEC);
        }
        let alphabet = b"{}()[]:$@!.=,\"# \n a_1-";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut q = base.as_bytes().to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % q.len() as u64) as usize;
                q[at] = alphabet[(seed >> 32) as usize % alphabet.len()];
            }
            let _ = analyze(
                std::str::from_utf8(&q).unwrap(),
                None,
                Some(&json!({"n": 2})),
                &SPEC,
            );
        }
    }

    /// An independent walker over graphql-parser's AST, expanding fragments
    /// naively (no memo): depth, aliases, root fields, complexity (literal
    /// list sizes only).
    mod reference {
        use graphql_parser::query::{
            Definition, OperationDefinition, Selection, SelectionSet, Value,
        };
        use std::collections::HashMap;

        type Set = SelectionSet<'static, String>;

        pub fn measure(q: &str, op_name: Option<&str>) -> (usize, usize, usize, u64) {
            let doc = graphql_parser::parse_query::<String>(q)
                .unwrap()
                .into_static();
            let mut frags = HashMap::new();
            let mut ops = Vec::new();
            for d in doc.definitions {
                match d {
                    Definition::Fragment(f) => {
                        frags.insert(f.name.clone(), f.selection_set);
                    }
                    Definition::Operation(o) => ops.push(match o {
                        OperationDefinition::SelectionSet(s) => (None, s),
                        OperationDefinition::Query(q) => (q.name, q.selection_set),
                        OperationDefinition::Mutation(m) => (m.name, m.selection_set),
                        OperationDefinition::Subscription(s) => (s.name, s.selection_set),
                    }),
                }
            }
            let set = &ops
                .iter()
                .find(|o| op_name.is_none() || o.0.as_deref() == op_name)
                .unwrap()
                .1;
            (
                depth(set, &frags),
                aliases(set, &frags),
                roots(set, &frags),
                cost(set, &frags),
            )
        }
        fn each<'s>(
            set: &'s Set,
            f: &'s HashMap<String, Set>,
            out: &mut Vec<&'s Selection<'static, String>>,
        ) {
            for s in &set.items {
                match s {
                    Selection::Field(_) => out.push(s),
                    Selection::InlineFragment(i) => each(&i.selection_set, f, out),
                    Selection::FragmentSpread(sp) => each(&f[&sp.fragment_name], f, out),
                }
            }
        }
        fn fields<'s>(
            set: &'s Set,
            f: &'s HashMap<String, Set>,
        ) -> Vec<&'s graphql_parser::query::Field<'static, String>> {
            let mut out = Vec::new();
            each(set, f, &mut out);
            out.into_iter()
                .filter_map(|s| {
                    if let Selection::Field(x) = s {
                        Some(x)
                    } else {
                        None
                    }
                })
                .collect()
        }
        fn depth(set: &Set, f: &HashMap<String, Set>) -> usize {
            fields(set, f)
                .iter()
                .map(|x| 1 + depth(&x.selection_set, f))
                .max()
                .unwrap_or(0)
        }
        fn aliases(set: &Set, f: &HashMap<String, Set>) -> usize {
            fields(set, f)
                .iter()
                .map(|x| usize::from(x.alias.is_some()) + aliases(&x.selection_set, f))
                .sum()
        }
        fn roots(set: &Set, f: &HashMap<String, Set>) -> usize {
            fields(set, f).len()
        }
        fn cost(set: &Set, f: &HashMap<String, Set>) -> u64 {
            let size = |x: &graphql_parser::query::Field<'static, String>| {
                let sizes = x
                    .arguments
                    .iter()
                    .filter(|(n, _)| ["first", "last", "limit"].contains(&n.as_str()));
                sizes
                    .map(|(_, v)| {
                        if let Value::Int(n) = v {
                            n.as_i64().unwrap() as u64
                        } else {
                            10
                        }
                    })
                    .max()
                    .unwrap_or(1)
                    .max(1)
            };
            fields(set, f)
                .iter()
                .map(|x| size(x) * (1 + cost(&x.selection_set, f)))
                .sum()
        }
    }

    #[test]
    fn agrees_with_graphql_parser() {
        let queries = [
            (ACCOUNT_VIEW, None),
            ("{ __typename a: viewer { login repositories(first: 3) { nodes { name } } } }", None),
            (
                "query A { x } query Feed($c: String) { feed(first: 10, after: $c) { edges { node { ...Post ... on Video { url } } } pageInfo { hasNextPage } } }
                 fragment Post on Post { id title author { ...Person } comments(last: 2) { body by: author { ...Person } } }
                 fragment Person on User { id name avatar(size: 64) }",
                Some("Feed"),
            ),
            (
                "mutation { a: like(id: 1) { likes } b: like(id: 2) { likes } c: unlike(id: 3) { ...L } } fragment L on Post { likes liked: viewerHasLiked }",
                None,
            ),
        ];
        for (q, name) in queries {
            let m = analyze(q, name, None, &OPEN).unwrap();
            assert_eq!(
                (m.depth, m.aliases, m.root_fields, m.complexity),
                reference::measure(q, name),
                "{q}"
            );
        }
    }
}
