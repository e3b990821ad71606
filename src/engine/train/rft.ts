// Reinforcement fine-tuning (work in progress).
import type { TrainOptions, TrainResult, TrainSpec } from '../contract.ts';

export async function trainReinforcement(spec: TrainSpec, options: TrainOptions = {}): Promise<TrainResult> {
  void options;
  throw new Error(`method ${spec.method} is not supported by this engine yet`);
}
