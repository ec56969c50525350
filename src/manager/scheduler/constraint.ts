// Placement constraints ("node.labels.zone==a") and spread preferences ("spread=node.labels.zone"):
// parsing with messages a person can act on, and matching against a node with Docker's semantics.
import { ClusterError, invalidArgument } from '../../common/errors';
import { NodeRole, type Node } from '../../gen/cluster/v1/objects';

export type ConstraintOperator = '==' | '!=';

/** What a constraint looks at on a node. Label names are case-sensitive, as Docker's. */
export type NodeAttribute =
  | { readonly kind: 'node.id' }
  | { readonly kind: 'node.hostname' }
  | { readonly kind: 'node.role' }
  | { readonly kind: 'node.platform.os' }
  | { readonly kind: 'node.platform.arch' }
  | { readonly kind: 'node.labels'; readonly label: string }
  | { readonly kind: 'engine.labels'; readonly label: string };

export interface Constraint {
  /** The text as the user wrote it, for messages. */
  readonly expression: string;
  readonly attribute: NodeAttribute;
  readonly operator: ConstraintOperator;
  /** Lower-cased: values compare case-insensitively, as SwarmKit's. */
  readonly value: string;
}

export interface SpreadPreference {
  readonly expression: string;
  readonly attribute: Extract<NodeAttribute, { kind: 'node.labels' | 'engine.labels' }>;
}

const SUPPORTED_KEYS =
  'node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<name> or engine.labels.<name>';
// SwarmKit's rules: a key starts with a letter or underscore; a value may not contain operator
// characters (=, !, <, >, ~) so that future operators stay unambiguous.
const KEY_PATTERN = /^[a-z_][a-z0-9\-_.]+$/i;
const VALUE_PATTERN = /^[a-z0-9:\-_\s.*()?+[\]\\^$|/]+$/i;
const LABEL_PATTERN = /^[a-z0-9_][a-z0-9\-_.]*$/i;
const OPERATORS: readonly ConstraintOperator[] = ['==', '!='];
const NODE_LABELS = 'node.labels.';
const ENGINE_LABELS = 'engine.labels.';
const SPREAD_PREFIX = /^spread\s*=/i;

function constraintError(expression: string, rule: string): ClusterError {
  return invalidArgument(`invalid constraint '${expression}': ${rule}`, { field: 'placement.constraints' });
}

/** Resolves a key to the node attribute it names; `fail` builds the error for the caller's field. */
function parseAttribute(key: string, fail: (rule: string) => ClusterError): NodeAttribute {
  const lower = key.toLowerCase();
  for (const [prefix, kind] of [
    [NODE_LABELS, 'node.labels'],
    [ENGINE_LABELS, 'engine.labels'],
  ] as const) {
    if (!lower.startsWith(prefix)) continue;
    const label = key.slice(prefix.length);
    if (label === '') throw fail(`the label name is missing after '${prefix}'`);
    if (!LABEL_PATTERN.test(label)) {
      throw fail(`label name '${label}' may contain only letters, digits, '.', '-' and '_'`);
    }
    return { kind, label };
  }
  switch (lower) {
    case 'node.id':
    case 'node.hostname':
    case 'node.role':
    case 'node.platform.os':
    case 'node.platform.arch':
      return { kind: lower };
    default:
      throw fail(`unknown key '${key}'; use ${SUPPORTED_KEYS}`);
  }
}

/**
 * Parses one constraint, "KEY==VALUE" or "KEY!=VALUE", whitespace around either side allowed.
 * Throws INVALID_ARGUMENT naming the expression and the rule it breaks.
 */
export function parseConstraint(expression: string): Constraint {
  const fail = (rule: string) => constraintError(expression, rule);
  // '==' is tried first so that "a!=b" (which contains no '==') and "a==b" are both unambiguous.
  const operator = OPERATORS.find((op) => expression.includes(op));
  if (operator === undefined) throw fail('expected KEY==VALUE or KEY!=VALUE');
  const at = expression.indexOf(operator);
  const key = expression.slice(0, at).trim();
  const value = expression.slice(at + operator.length).trim();
  if (key === '') throw fail(`the key before '${operator}' is empty`);
  if (!KEY_PATTERN.test(key)) {
    throw fail(`key '${key}' is invalid; use ${SUPPORTED_KEYS}`);
  }
  const attribute = parseAttribute(key, fail);
  if (value === '') throw fail(`the value after '${operator}' is empty`);
  if (!VALUE_PATTERN.test(value)) {
    throw fail(
      `value '${value}' may contain only letters, digits, spaces and : - _ . * ( ) ? + [ ] \\ ^ $ | /`,
    );
  }
  const lowerValue = value.toLowerCase();
  if (attribute.kind === 'node.role' && lowerValue !== 'manager' && lowerValue !== 'worker') {
    throw fail(`node.role is 'manager' or 'worker', got '${value}'`);
  }
  return { expression, attribute, operator, value: lowerValue };
}

export function parseConstraints(expressions: readonly string[]): Constraint[] {
  return expressions.map(parseConstraint);
}

/**
 * Parses a spread preference: "node.labels.KEY" or "engine.labels.KEY", optionally written as
 * the CLI's "spread=node.labels.KEY".
 */
export function parseSpreadPreference(expression: string): SpreadPreference {
  const fail = (rule: string) =>
    invalidArgument(`invalid placement preference '${expression}': ${rule}`, {
      field: 'placement.spreadPreferences',
    });
  const descriptor = expression.trim().replace(SPREAD_PREFIX, '').trim();
  if (descriptor === '') throw fail('expected spread=node.labels.<name>');
  const lower = descriptor.toLowerCase();
  if (!lower.startsWith(NODE_LABELS) && !lower.startsWith(ENGINE_LABELS)) {
    throw fail(`only node.labels.<name> and engine.labels.<name> can be spread over, got '${descriptor}'`);
  }
  const attribute = parseAttribute(descriptor, fail);
  if (attribute.kind !== 'node.labels' && attribute.kind !== 'engine.labels') {
    throw fail(`only node.labels.<name> and engine.labels.<name> can be spread over, got '${descriptor}'`);
  }
  return { expression, attribute };
}

/** The node's value for an attribute, or undefined when the node does not have it. */
export function nodeAttributeValue(attribute: NodeAttribute, node: Node): string | undefined {
  switch (attribute.kind) {
    case 'node.id':
      return node.id;
    case 'node.hostname':
      return node.description?.hostname;
    case 'node.role':
      return node.role === NodeRole.NODE_ROLE_MANAGER ? 'manager' : 'worker';
    case 'node.platform.os':
      return node.description?.os;
    case 'node.platform.arch':
      return node.description?.architecture;
    case 'node.labels':
      return node.spec?.annotations?.labels[attribute.label];
    case 'engine.labels':
      return node.description?.engineLabels[attribute.label];
  }
}

/**
 * Docker's semantics: values compare case-insensitively; a node without the attribute (a missing
 * label, no hostname) never satisfies '==' and always satisfies '!='.
 */
export function constraintMatches(constraint: Constraint, node: Node): boolean {
  const actual = nodeAttributeValue(constraint.attribute, node);
  const equal = actual !== undefined && actual.toLowerCase() === constraint.value;
  return constraint.operator === '==' ? equal : !equal;
}

/** The first constraint the node fails, or undefined when it satisfies all of them. */
export function firstUnmetConstraint(constraints: readonly Constraint[], node: Node): Constraint | undefined {
  for (const constraint of constraints) {
    if (!constraintMatches(constraint, node)) return constraint;
  }
  return undefined;
}
