// The five tables of the cluster store: which generated type each holds, how its objects are
// serialized, which name lookups and secondary indexes it has. Pure data, no state.
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

import { Cluster, Network, Node, Service, Task } from '../gen/cluster/v1/objects';

export interface TableTypes {
  nodes: Node;
  services: Service;
  tasks: Task;
  networks: Network;
  clusters: Cluster;
}

export type TableName = keyof TableTypes;

/** Read-only all the way down: stored objects are frozen and shared with every reader of events. */
export type DeepReadonly<T> = T extends Date
  ? Date
  : T extends readonly (infer U)[]
    ? readonly DeepReadonly<U>[]
    : T extends object
      ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
      : T;

/** How a table's objects are held: frozen, so that reads, events and results can share them. */
export type Frozen<N extends TableName> = DeepReadonly<TableTypes[N]>;
export type StoredObject = TableTypes[TableName];

/** Every table, in a fixed order: the order of snapshots and of the wire tags in codec.ts. */
export const TABLE_NAMES: readonly TableName[] = ['nodes', 'services', 'tasks', 'networks', 'clusters'];

/** Secondary index names per table; keys are strings (numbers such as enums are stringified). */
export interface TableIndexNames {
  nodes: 'name' | 'hostname' | 'role';
  services: 'name';
  tasks: 'serviceId' | 'nodeId' | 'desiredState' | 'slot';
  networks: 'name';
  clusters: 'name';
}

interface ObjectCodec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

export interface TableSpec<N extends TableName> {
  name: N;
  /** The singular noun used in error messages ("service 'web' not found"). */
  kind: string;
  codec: ObjectCodec<TableTypes[N]>;
  /** Names a lookup by name tries, first match wins in this order (node: name, then hostname). */
  names(obj: Frozen<N>): string[];
  /** Whether two objects of this table may not share a name (services and networks). */
  uniqueName: boolean;
  /** Secondary index keys of an object: an object with an empty key is left out of that index. */
  indexes: { [I in TableIndexNames[N]]: (obj: Frozen<N>) => string };
}

const nonEmpty = (...names: (string | undefined)[]): string[] =>
  names.filter((n): n is string => n !== undefined && n !== '');

export const TABLES: { [N in TableName]: TableSpec<N> } = {
  nodes: {
    name: 'nodes',
    kind: 'node',
    codec: Node,
    names: (n) => nonEmpty(n.spec?.annotations?.name, n.description?.hostname),
    uniqueName: false,
    indexes: {
      name: (n) => n.spec?.annotations?.name ?? '',
      hostname: (n) => n.description?.hostname ?? '',
      role: (n) => String(n.role),
    },
  },
  services: {
    name: 'services',
    kind: 'service',
    codec: Service,
    names: (s) => nonEmpty(s.spec?.annotations?.name),
    uniqueName: true,
    indexes: { name: (s) => s.spec?.annotations?.name ?? '' },
  },
  tasks: {
    name: 'tasks',
    kind: 'task',
    codec: Task,
    names: (t) => nonEmpty(t.annotations?.name),
    uniqueName: false,
    indexes: {
      serviceId: (t) => t.serviceId,
      nodeId: (t) => t.nodeId,
      desiredState: (t) => String(t.desiredState),
      // serviceId/slot: the replicated orchestrator's question "which tasks fill slot N".
      slot: (t) => (t.slot > 0 ? `${t.serviceId}/${t.slot}` : ''),
    },
  },
  networks: {
    name: 'networks',
    kind: 'network',
    codec: Network,
    names: (n) => nonEmpty(n.spec?.annotations?.name),
    uniqueName: true,
    indexes: { name: (n) => n.spec?.annotations?.name ?? '' },
  },
  clusters: {
    name: 'clusters',
    kind: 'cluster',
    codec: Cluster,
    names: (c) => nonEmpty(c.spec?.annotations?.name),
    uniqueName: true,
    indexes: { name: (c) => c.spec?.annotations?.name ?? '' },
  },
};

/** A table's spec seen without its object type, for code that handles every table alike. */
export interface AnyTableSpec {
  name: TableName;
  kind: string;
  names(obj: DeepReadonly<StoredObject>): string[];
  uniqueName: boolean;
  indexes: Record<string, (obj: DeepReadonly<StoredObject>) => string>;
}

export function anySpec(table: TableName): AnyTableSpec {
  // Sound because the store only ever passes a table's own objects to its spec's functions.
  return TABLES[table] as unknown as AnyTableSpec;
}
