// The scheduler's public face: pure placement (tasks, nodes → assignments or reasons) and the
// constraint parser the control API reuses to validate specs.
export {
  placeTasks,
  type PlacementInput,
  type PlacementResult,
  type TaskAssignment,
  type UnplacedTask,
} from './placement';
export {
  parseConstraint,
  parseConstraints,
  parseSpreadPreference,
  constraintMatches,
  type Constraint,
  type SpreadPreference,
} from './constraint';
