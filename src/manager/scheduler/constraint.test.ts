// Constraint and spread-preference parsing (good and bad input, messages) and Docker's matching
// semantics: case-insensitive values, a missing label never equals, != matches when missing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ClusterError } from '../../common/errors';
import { NodeRole } from '../../gen/cluster/v1/objects';
import { constraintMatches, parseConstraint, parseConstraints, parseSpreadPreference } from './constraint';
import { makeNode } from './testing';

function assertInvalid(parse: () => unknown, messagePattern: RegExp): void {
  assert.throws(parse, (e: unknown) => {
    assert.ok(e instanceof ClusterError, `expected a ClusterError, got ${String(e)}`);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, messagePattern);
    return true;
  });
}

describe('parseConstraint', () => {
  it('parses each supported key with == and !=', () => {
    assert.deepEqual(parseConstraint('node.id==abc'), {
      expression: 'node.id==abc',
      attribute: { kind: 'node.id' },
      operator: '==',
      value: 'abc',
    });
    assert.deepEqual(parseConstraint('node.hostname!=web-1').attribute, { kind: 'node.hostname' });
    assert.equal(parseConstraint('node.hostname!=web-1').operator, '!=');
    assert.deepEqual(parseConstraint('node.role==manager').attribute, { kind: 'node.role' });
    assert.deepEqual(parseConstraint('node.labels.zone==a').attribute, {
      kind: 'node.labels',
      label: 'zone',
    });
    assert.deepEqual(parseConstraint('engine.labels.storage!=ssd').attribute, {
      kind: 'engine.labels',
      label: 'storage',
    });
    assert.deepEqual(parseConstraint('node.platform.os==linux').attribute, { kind: 'node.platform.os' });
    assert.deepEqual(parseConstraint('node.platform.arch==x86_64').attribute, { kind: 'node.platform.arch' });
  });

  it('tolerates whitespace around key, operator and value', () => {
    const c = parseConstraint('  node.labels.zone   ==  eu-west  ');
    assert.deepEqual(c.attribute, { kind: 'node.labels', label: 'zone' });
    assert.equal(c.operator, '==');
    assert.equal(c.value, 'eu-west');
  });

  it('accepts keys in any case but keeps the label name as written', () => {
    const c = parseConstraint('Node.Labels.Zone==A');
    assert.deepEqual(c.attribute, { kind: 'node.labels', label: 'Zone' });
    assert.equal(c.value, 'a');
  });

  it('accepts dotted label names and values with SwarmKit characters', () => {
    const c = parseConstraint('node.labels.com.example.tier==front_end-1.0');
    assert.deepEqual(c.attribute, { kind: 'node.labels', label: 'com.example.tier' });
    assert.equal(c.value, 'front_end-1.0');
  });

  it('rejects an expression without an operator, naming it and the rule', () => {
    assertInvalid(
      () => parseConstraint('node.labels.zone=a'),
      /^invalid constraint 'node\.labels\.zone=a': expected KEY==VALUE or KEY!=VALUE$/,
    );
    assertInvalid(() => parseConstraint(''), /expected KEY==VALUE or KEY!=VALUE/);
  });

  it('rejects an unknown key and lists the supported ones', () => {
    assertInvalid(
      () => parseConstraint('node.colour==red'),
      /invalid constraint 'node\.colour==red': unknown key 'node\.colour'; use node\.id, node\.hostname, node\.role/,
    );
  });

  it('rejects an empty key, an empty value and a missing label name', () => {
    assertInvalid(() => parseConstraint('==a'), /the key before '==' is empty/);
    assertInvalid(() => parseConstraint('node.hostname== '), /the value after '==' is empty/);
    assertInvalid(
      () => parseConstraint('node.labels.==a'),
      /the label name is missing after 'node\.labels\.'/,
    );
  });

  it('rejects values holding operator characters', () => {
    assertInvalid(
      () => parseConstraint('node.labels.a==b==c'),
      /value 'b==c' may contain only letters, digits/,
    );
    assertInvalid(() => parseConstraint('node.labels.a!=<b'), /value '<b' may contain only/);
  });

  it('rejects a key with characters SwarmKit does not allow', () => {
    assertInvalid(() => parseConstraint('node.labels.z one==a'), /key 'node\.labels\.z one' is invalid/);
    assertInvalid(() => parseConstraint('1node.id==a'), /key '1node\.id' is invalid/);
  });

  it('rejects a node.role that is neither manager nor worker', () => {
    assertInvalid(
      () => parseConstraint('node.role==boss'),
      /node\.role is 'manager' or 'worker', got 'boss'/,
    );
    assert.equal(parseConstraint('node.role==WORKER').value, 'worker');
  });

  it('parses a list and fails on its first bad entry', () => {
    assert.equal(parseConstraints(['node.role==worker', 'node.labels.zone!=b']).length, 2);
    assertInvalid(() => parseConstraints(['node.role==worker', 'bogus']), /invalid constraint 'bogus'/);
  });

  it('marks the error with the spec field it belongs to', () => {
    try {
      parseConstraint('x');
      assert.fail('expected an error');
    } catch (e) {
      assert.ok(e instanceof ClusterError);
      assert.deepEqual(e.details, { field: 'placement.constraints' });
    }
  });
});

describe('constraintMatches', () => {
  const manager = makeNode('n1', {
    hostname: 'Web-1',
    role: NodeRole.NODE_ROLE_MANAGER,
    labels: { zone: 'a', Tier: 'Front' },
    engineLabels: { storage: 'ssd' },
  });
  const bare = makeNode('n2', { hostname: 'db-1' });
  const matches = (expression: string, node = manager) =>
    constraintMatches(parseConstraint(expression), node);

  it('matches node.id and node.hostname, hostname case-insensitively', () => {
    assert.equal(matches('node.id==n1'), true);
    assert.equal(matches('node.id==n2'), false);
    assert.equal(matches('node.id!=n2'), true);
    assert.equal(matches('node.hostname==web-1'), true);
    assert.equal(matches('node.hostname!=WEB-1'), false);
  });

  it('matches node.role from the node role', () => {
    assert.equal(matches('node.role==manager'), true);
    assert.equal(matches('node.role==worker'), false);
    assert.equal(matches('node.role==worker', bare), true);
    assert.equal(matches('node.role!=manager', bare), true);
  });

  it('matches node labels and engine labels separately', () => {
    assert.equal(matches('node.labels.zone==a'), true);
    assert.equal(matches('node.labels.zone==b'), false);
    assert.equal(matches('engine.labels.storage==SSD'), true);
    assert.equal(matches('node.labels.storage==ssd'), false, 'an engine label is not a node label');
    assert.equal(matches('engine.labels.zone==a'), false, 'a node label is not an engine label');
  });

  it('treats label names as case-sensitive and values as case-insensitive', () => {
    assert.equal(matches('node.labels.Tier==front'), true);
    assert.equal(matches('node.labels.tier==front'), false);
  });

  it('never matches == on a missing label, always matches != on one', () => {
    assert.equal(matches('node.labels.zone==a', bare), false);
    assert.equal(matches('node.labels.zone!=a', bare), true);
    assert.equal(matches('engine.labels.storage==ssd', bare), false);
    assert.equal(matches('engine.labels.storage!=ssd', bare), true);
  });

  it('matches platform os and architecture', () => {
    assert.equal(matches('node.platform.os==linux'), true);
    assert.equal(matches('node.platform.arch!=x86_64'), false);
  });
});

describe('parseSpreadPreference', () => {
  it('accepts node and engine labels, with or without the spread= prefix', () => {
    assert.deepEqual(parseSpreadPreference('spread=node.labels.zone').attribute, {
      kind: 'node.labels',
      label: 'zone',
    });
    assert.deepEqual(parseSpreadPreference('node.labels.rack').attribute, {
      kind: 'node.labels',
      label: 'rack',
    });
    assert.deepEqual(parseSpreadPreference(' spread = engine.labels.dc ').attribute, {
      kind: 'engine.labels',
      label: 'dc',
    });
  });

  it('rejects other descriptors with the rule', () => {
    assertInvalid(
      () => parseSpreadPreference('spread=node.hostname'),
      /^invalid placement preference 'spread=node\.hostname': only node\.labels\.<name> and engine\.labels\.<name> can be spread over, got 'node\.hostname'$/,
    );
    assertInvalid(() => parseSpreadPreference('spread='), /expected spread=node\.labels\.<name>/);
    assertInvalid(() => parseSpreadPreference('node.labels.'), /the label name is missing/);
  });
});
