//! ECS's cluster query language: the expressions of `memberOf` placement
//! constraints (`attribute:ecs.instance-type =~ t3.*`,
//! `attribute:ecs.availability-zone in [us-east-1a, us-east-1b]`,
//! `not(task:group == db) and attribute:stack exists`).
//!
//! The grammar, as the ECS developer guide gives it ("Cluster query
//! language"): `subject operator [argument]`, combined with `and` (`&&`),
//! `or` (`||`), `not` (`!`) and parentheses. Subjects are
//! `attribute:<name>`, `ec2InstanceId`, `agentConnected`, `agentVersion`,
//! `registeredAt`, `runningTasksCount` and `task:group`. Operators have a
//! symbol and a word each (`==`/`equals`, `=~`/`matches`, `in`/`not_in`,
//! `exists`/`!exists`, ...).
//!
//! Evaluation answers [`Truth::Unknown`] where this instance cannot know
//! the fact (the tasks running on it, when the agent registered, a custom
//! attribute before the container instance could be described), with
//! Kleene's three-valued `and`/`or`/`not`: an unknown that cannot change
//! the answer does not make it unknown.

use std::collections::BTreeMap;
use std::fmt;

/// Why an expression could not be parsed. Names the position, never more
/// of the expression than the token at fault (expressions are not secret,
/// but a message should point, not repeat).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster query language, at character {at}: {problem}")]
pub struct QueryError {
    /// 0-based character offset of the token at fault (the end for a
    /// missing token).
    pub at: usize,
    pub problem: String,
}

/// What a predicate is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:<name>`: a built-in (`ecs.*`) or custom attribute.
    Attribute(String),
    Ec2InstanceId,
    AgentConnected,
    AgentVersion,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
            Subject::TaskGroup => f.write_str("task:group"),
        }
    }
}

/// A comparison of a subject with its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Eq(String),
    Ne(String),
    /// `=~`: the argument is a pattern in which `*` matches any run of
    /// characters; the whole value must match.
    Matches(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(String),
    Ge(String),
    Lt(String),
    Le(String),
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Predicate(Subject, Op),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// Three-valued truth: what an expression says about this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    /// It depends on a fact this instance does not know.
    Unknown,
}

impl Truth {
    fn from_bool(b: bool) -> Truth {
        if b { Truth::True } else { Truth::False }
    }

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }

    fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }
}

/// What an expression is evaluated against: this instance's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Attribute name -> value (`ecs.instance-type` -> `t3.large`).
    pub attributes: BTreeMap<String, String>,
    /// Whether `attributes` holds every attribute ECS has for this
    /// instance (the container instance was described): then a missing
    /// attribute is absent, not unknown.
    pub complete: bool,
    /// The EC2 instance ID (IMDS), if known.
    pub ec2_instance_id: Option<String>,
}

impl Expr {
    /// Parses one expression.
    pub fn parse(text: &str) -> Result<Expr, QueryError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            next: 0,
            end: text.chars().count(),
        };
        let expr = parser.or()?;
        if let Some(token) = parser.peek() {
            return Err(QueryError {
                at: token.at,
                problem: format!("unexpected {:?} after a complete expression", token.text),
            });
        }
        Ok(expr)
    }

    /// What the expression says about the instance described by `facts`.
    pub fn eval(&self, facts: &Facts) -> Truth {
        match self {
            Expr::Not(inner) => inner.eval(facts).not(),
            Expr::And(a, b) => a.eval(facts).and(b.eval(facts)),
            Expr::Or(a, b) => a.eval(facts).or(b.eval(facts)),
            Expr::Predicate(subject, op) => {
                let value = match subject {
                    Subject::Attribute(name) => match facts.attributes.get(name) {
                        Some(value) => Some(value.as_str()),
                        None if facts.complete => None,
                        None => return Truth::Unknown,
                    },
                    Subject::Ec2InstanceId => match &facts.ec2_instance_id {
                        Some(id) => Some(id.as_str()),
                        None => return Truth::Unknown,
                    },
                    // Facts of the ECS agent and of the tasks placed on
                    // the instance: only ECS knows them.
                    Subject::AgentConnected
                    | Subject::AgentVersion
                    | Subject::RegisteredAt
                    | Subject::RunningTasksCount
                    | Subject::TaskGroup => return Truth::Unknown,
                };
                compare(value, op)
            }
        }
    }

    /// The attributes the expression reads (`attribute:<name>` subjects).
    pub fn attributes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_attributes(&mut out);
        out
    }

    fn collect_attributes<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Predicate(Subject::Attribute(name), _) => out.push(name),
            Expr::Predicate(..) => {}
            Expr::Not(inner) => inner.collect_attributes(out),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect_attributes(out);
                b.collect_attributes(out);
            }
        }
    }
}

/// One comparison; `value` is `None` for an attribute the instance does
/// not have.
fn compare(value: Option<&str>, op: &Op) -> Truth {
    let Some(value) = value else {
        // An absent attribute equals nothing and is in no list.
        return Truth::from_bool(matches!(op, Op::Ne(_) | Op::NotIn(_) | Op::NotExists));
    };
    match op {
        Op::Exists => Truth::True,
        Op::NotExists => Truth::False,
        Op::Eq(arg) => Truth::from_bool(value == arg),
        Op::Ne(arg) => Truth::from_bool(value != arg),
        Op::Matches(pattern) => Truth::from_bool(wildcard_match(pattern, value)),
        Op::In(list) => Truth::from_bool(list.iter().any(|a| a == value)),
        Op::NotIn(list) => Truth::from_bool(!list.iter().any(|a| a == value)),
        Op::Gt(arg) => ordered(value, arg, |o| o.is_gt()),
        Op::Ge(arg) => ordered(value, arg, |o| o.is_ge()),
        Op::Lt(arg) => ordered(value, arg, |o| o.is_lt()),
        Op::Le(arg) => ordered(value, arg, |o| o.is_le()),
    }
}

/// Orders numbers as numbers and anything else as text.
fn ordered(value: &str, arg: &str, test: impl Fn(std::cmp::Ordering) -> bool) -> Truth {
    let order = match (value.parse::<f64>(), arg.parse::<f64>()) {
        (Ok(a), Ok(b)) => match a.partial_cmp(&b) {
            Some(order) => order,
            None => return Truth::Unknown,
        },
        _ => value.cmp(arg),
    };
    Truth::from_bool(test(order))
}

/// `*` matches any run of characters (also none); everything else itself.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == value;
    };
    if parts.len() == 1 {
        return pattern == value;
    }
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    at: usize,
    /// Written in quotes: a value, never a keyword.
    quoted: bool,
}

fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if matches!(c, '(' | ')' | '[' | ']' | ',') {
            tokens.push(Token {
                text: c.to_string(),
                at: i,
                quoted: false,
            });
            i += 1;
        } else if matches!(c, '\'' | '"') {
            let start = i;
            i += 1;
            let mut value = String::new();
            while i < chars.len() && chars[i] != c {
                value.push(chars[i]);
                i += 1;
            }
            if i == chars.len() {
                return Err(QueryError {
                    at: start,
                    problem: "a quoted value is not closed".into(),
                });
            }
            i += 1;
            tokens.push(Token {
                text: value,
                at: start,
                quoted: true,
            });
        } else {
            let start = i;
            let mut word = String::new();
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '(' | ')' | '[' | ']' | ',' | '\'' | '"')
            {
                word.push(chars[i]);
                i += 1;
            }
            tokens.push(Token {
                text: word,
                at: start,
                quoted: false,
            });
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn is_keyword(&self, words: &[&str]) -> bool {
        self.peek()
            .is_some_and(|t| !t.quoted && words.iter().any(|w| t.text.eq_ignore_ascii_case(w)))
    }

    fn take(&mut self, what: &str) -> Result<Token, QueryError> {
        let token = self.tokens.get(self.next).cloned().ok_or(QueryError {
            at: self.end,
            problem: format!("expected {what}, found the end"),
        })?;
        self.next += 1;
        Ok(token)
    }

    fn expect(&mut self, symbol: &str) -> Result<(), QueryError> {
        let token = self.take(&format!("{symbol:?}"))?;
        if token.quoted || token.text != symbol {
            return Err(QueryError {
                at: token.at,
                problem: format!("expected {symbol:?}, found {:?}", token.text),
            });
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.is_keyword(&["or", "||"]) {
            self.next += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        while self.is_keyword(&["and", "&&"]) {
            self.next += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        if self.is_keyword(&["not", "!"]) {
            self.next += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek().is_some_and(|t| !t.quoted && t.text == "(") {
            self.next += 1;
            let inner = self.or()?;
            self.expect(")")?;
            return Ok(inner);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, QueryError> {
        let token = self.take("a subject (attribute:<name>, ec2InstanceId, ...)")?;
        let subject = parse_subject(&token)?;
        let op_token = self.take("an operator (==, !=, =~, in, exists, ...)")?;
        let word = if op_token.quoted {
            String::new()
        } else {
            op_token.text.to_ascii_lowercase()
        };
        let op = match word.as_str() {
            "exists" => Op::Exists,
            "!exists" | "not_exists" => Op::NotExists,
            "in" => Op::In(self.list()?),
            "not_in" => Op::NotIn(self.list()?),
            "==" | "equals" => Op::Eq(self.value()?),
            "!=" | "not_equals" => Op::Ne(self.value()?),
            "=~" | "matches" => Op::Matches(self.value()?),
            ">" | "greater_than" => Op::Gt(self.value()?),
            ">=" | "greater_than_equal" => Op::Ge(self.value()?),
            "<" | "less_than" => Op::Lt(self.value()?),
            "<=" | "less_than_equal" => Op::Le(self.value()?),
            _ => {
                return Err(QueryError {
                    at: op_token.at,
                    problem: format!("unknown operator {:?}", op_token.text),
                });
            }
        };
        Ok(Expr::Predicate(subject, op))
    }

    fn value(&mut self) -> Result<String, QueryError> {
        let token = self.take("a value")?;
        if !token.quoted && matches!(token.text.as_str(), "(" | ")" | "[" | "]" | ",") {
            return Err(QueryError {
                at: token.at,
                problem: format!("expected a value, found {:?}", token.text),
            });
        }
        Ok(token.text)
    }

    fn list(&mut self) -> Result<Vec<String>, QueryError> {
        self.expect("[")?;
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            let token = self.take("\",\" or \"]\"")?;
            match (token.quoted, token.text.as_str()) {
                (false, ",") => {}
                (false, "]") => return Ok(values),
                _ => {
                    return Err(QueryError {
                        at: token.at,
                        problem: format!("expected \",\" or \"]\", found {:?}", token.text),
                    });
                }
            }
        }
    }
}

fn parse_subject(token: &Token) -> Result<Subject, QueryError> {
    let unknown = || QueryError {
        at: token.at,
        problem: format!(
            "unknown subject {:?} (attribute:<name>, ec2InstanceId, agentConnected, agentVersion, registeredAt, runningTasksCount or task:group)",
            token.text
        ),
    };
    if token.quoted {
        return Err(unknown());
    }
    if let Some(name) = token.text.strip_prefix("attribute:") {
        if name.is_empty() {
            return Err(QueryError {
                at: token.at,
                problem: "attribute: names no attribute".into(),
            });
        }
        return Ok(Subject::Attribute(name.to_owned()));
    }
    Ok(match token.text.as_str() {
        "ec2InstanceId" => Subject::Ec2InstanceId,
        "agentConnected" => Subject::AgentConnected,
        "agentVersion" => Subject::AgentVersion,
        "registeredAt" => Subject::RegisteredAt,
        "runningTasksCount" => Subject::RunningTasksCount,
        "task:group" => Subject::TaskGroup,
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn host(complete: bool) -> Facts {
        Facts {
            attributes: [
                ("ecs.instance-type", "t3.large"),
                ("ecs.availability-zone", "us-east-1a"),
                ("ecs.cpu-architecture", "x86_64"),
                ("ecs.os-type", "linux"),
                ("stack", "prod"),
                ("size", "12"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            complete,
            ec2_instance_id: Some("i-0abc".into()),
        }
    }

    #[rstest]
    #[case::equals("attribute:ecs.instance-type == t3.large", Truth::True)]
    #[case::equals_word("attribute:ecs.instance-type equals t3.micro", Truth::False)]
    #[case::not_equals("attribute:ecs.instance-type != t3.micro", Truth::True)]
    #[case::pattern("attribute:ecs.instance-type =~ t3.*", Truth::True)]
    #[case::pattern_other_family("attribute:ecs.instance-type =~ g4dn.*", Truth::False)]
    #[case::pattern_middle("attribute:ecs.instance-type matches t*.l*e", Truth::True)]
    #[case::in_list(
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        Truth::True
    )]
    #[case::not_in_list("attribute:ecs.availability-zone not_in [us-east-1a]", Truth::False)]
    #[case::quoted_list("ec2InstanceId in ['i-0abc', \"i-0def\"]", Truth::True)]
    #[case::exists("attribute:stack exists", Truth::True)]
    #[case::not_exists("attribute:stack !exists", Truth::False)]
    #[case::absent_when_complete("attribute:gpu exists", Truth::False)]
    #[case::absent_not_equal("attribute:gpu != yes", Truth::True)]
    #[case::numbers_as_numbers("attribute:size > 9", Truth::True)]
    #[case::numbers_le("attribute:size <= 12", Truth::True)]
    #[case::and_or(
        "attribute:ecs.instance-type =~ t3.* and attribute:ecs.availability-zone != us-east-1d",
        Truth::True
    )]
    #[case::not_parens("not(attribute:ecs.instance-type =~ t3.*)", Truth::False)]
    #[case::bang_and_symbols(
        "!(attribute:stack == dev) && attribute:ecs.os-type == linux",
        Truth::True
    )]
    #[case::or_binds_looser(
        "attribute:stack == dev or attribute:stack == prod and attribute:size == 12",
        Truth::True
    )]
    #[case::task_group_unknown("task:group == service:web", Truth::Unknown)]
    #[case::unknown_cannot_save_false("task:group == x and attribute:stack == dev", Truth::False)]
    #[case::unknown_cannot_spoil_true("task:group == x or attribute:stack == prod", Truth::True)]
    #[case::running_tasks_unknown("runningTasksCount == 0", Truth::Unknown)]
    fn evaluates_against_complete_facts(#[case] expr: &str, #[case] expected: Truth) {
        let parsed = Expr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(parsed.eval(&host(true)), expected, "{expr}: {parsed:?}");
    }

    #[rstest]
    #[case::custom_absent_unknown("attribute:gpu exists", Truth::Unknown)]
    #[case::custom_present_known("attribute:stack == prod", Truth::True)]
    #[case::and_with_false("attribute:gpu exists and attribute:stack == dev", Truth::False)]
    fn an_attribute_not_yet_known_is_unknown(#[case] expr: &str, #[case] expected: Truth) {
        let parsed = Expr::parse(expr).expect("valid");
        assert_eq!(parsed.eval(&host(false)), expected, "{expr}");
    }

    #[test]
    fn an_unknown_instance_id_is_unknown() {
        let facts = Facts {
            ec2_instance_id: None,
            ..host(true)
        };
        let parsed = Expr::parse("ec2InstanceId in [i-1]").expect("valid");
        assert_eq!(parsed.eval(&facts), Truth::Unknown);
    }

    #[rstest]
    #[case::empty("", 0)]
    #[case::unknown_subject("attribute.stack == x", 0)]
    #[case::unknown_operator("attribute:stack <> x", 16)]
    #[case::missing_value("attribute:stack ==", 18)]
    #[case::unclosed_paren("(attribute:stack exists", 23)]
    #[case::unclosed_list("attribute:stack in [a, b", 24)]
    #[case::list_without_brackets("attribute:stack in a", 19)]
    #[case::unclosed_quote("attribute:stack == 'a", 19)]
    #[case::trailing("attribute:stack exists exists", 23)]
    #[case::empty_attribute("attribute: exists", 0)]
    fn bad_syntax_names_the_position(#[case] expr: &str, #[case] at: usize) {
        let e = Expr::parse(expr).expect_err(expr);
        assert_eq!(e.at, at, "{expr}: {e}");
    }

    #[test]
    fn lists_the_attributes_it_reads() {
        let parsed = Expr::parse(
            "attribute:a exists and (attribute:ecs.os-type == linux or not attribute:b exists)",
        )
        .expect("valid");
        assert_eq!(parsed.attributes(), ["a", "ecs.os-type", "b"]);
    }

    #[rstest]
    #[case("*", "", true)]
    #[case("t3.*", "t3.large", true)]
    #[case("t3.*", "t3a.large", false)]
    #[case("*.large", "m5.large", true)]
    #[case("a*b*c", "abc", true)]
    #[case("a*b*c", "ac", false)]
    #[case("ab*ba", "aba", false)]
    #[case("exact", "exact", true)]
    fn wildcards(#[case] pattern: &str, #[case] value: &str, #[case] expected: bool) {
        assert_eq!(wildcard_match(pattern, value), expected);
    }

    proptest::proptest! {
        /// Any input parses or fails with a position inside it (or at its
        /// end); it never panics.
        #[test]
        fn never_panics(text in ".{0,64}") {
            if let Err(e) = Expr::parse(&text) {
                proptest::prop_assert!(e.at <= text.chars().count());
            }
        }
    }
}
