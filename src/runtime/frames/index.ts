/**
 * The frame layer of the runtime: x86-64 SysV layout, frame plans and the frame
 * codec. repdb imports these same functions, so generator and runtime agree by
 * construction (docs/FRAMES.md).
 */
export * from './types.js';
export { LayoutEngine, alignUp, primLayout, type Layout, type FieldLayout, type AggregateLayout } from './layout.js';
export { planEntry, typeName, isByteType, isCountType, valueProblem, type EntryPlan, type FrameDef, type Slot, type BufferDef } from './plan.js';
export { encodeInput, decodeInput, encodeOutput, decodeOutput, isBigPrim, MAX_FRAME_BYTES, type FrameValues, type DecodedInput } from './codec.js';
export { readableResults, fromReadableArgs, resultJson, resultText, isCharArray, cText, charArrayOf, type ReadableArgOptions } from './values.js';
