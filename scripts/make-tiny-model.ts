// Writes models/tiny-llama/: a small randomly initialised LlamaForCausalLM in Hugging Face layout,
// with a byte-level BPE tokenizer learned from the demo dataset and a ChatML chat template (with
// tools). Everything is derived from fixed inputs and a fixed seed, so running it again produces
// byte-identical files. It also (re)writes samples/demo-*.jsonl, whose text the tokenizer learns.
//
// Run: npm run make:tiny-model

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SeededRandom } from '../src/engine/data/random.ts';
import { saveHfModel } from '../src/engine/io/hf-model.ts';
import type { HostTensor } from '../src/engine/io/safetensors.ts';
import { byteLevelTokenizerJson, trainByteLevelBpe, type SpecialToken } from './lib/byte-level-bpe.ts';
import { demoExamples, writeDemoData } from './make-demo-data.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const MODEL_DIR = join(ROOT, 'models', 'tiny-llama');
const SEED = 20240601;

/** Byte tokens + merges; the added tokens come after. */
const BPE_VOCAB_SIZE = 1000;
const ARCHITECTURE = {
  hiddenSize: 128,
  intermediateSize: 352,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  maxPositionEmbeddings: 512,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
};

const ADDED_TOKENS: SpecialToken[] = [
  { content: '<|endoftext|>', special: true },
  { content: '<|im_start|>', special: true },
  { content: '<|im_end|>', special: true },
  // Tool-call markup, as Qwen2.5 has it: added (never split) but not special (kept when decoding).
  { content: '<tool_call>', special: false },
  { content: '</tool_call>', special: false },
  { content: '<tool_response>', special: false },
  { content: '</tool_response>', special: false },
];

const TOOLS_PREAMBLE =
  '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
  'You are provided with function signatures within <tools></tools> XML tags:\n<tools>';
const TOOLS_POSTAMBLE =
  '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' +
  '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>';

/** ChatML in the style of Qwen2.5 (developer messages are rendered as system by the engine). */
export const CHAT_TEMPLATE = [
  "{%- if tools %}",
  "{{- '<|im_start|>system\\n' }}",
  "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}",
  `{{- ${JSON.stringify(TOOLS_PREAMBLE)} }}`,
  "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}",
  `{{- ${JSON.stringify(TOOLS_POSTAMBLE + '<|im_end|>\n')} }}`,
  "{%- elif messages[0].role == 'system' %}",
  "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}",
  "{%- endif %}",
  "{%- for message in messages %}",
  "{%- if message.role == 'system' and loop.first %}",
  "{%- elif message.role == 'user' or message.role == 'system' %}",
  "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}",
  "{%- elif message.role == 'assistant' %}",
  "{{- '<|im_start|>assistant' }}",
  "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}",
  "{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}",
  "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}",
  "{{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' + (tool_call.arguments | tojson) + '}\\n</tool_call>' }}",
  "{%- endfor %}{%- endif %}",
  "{{- '<|im_end|>\\n' }}",
  "{%- elif message.role == 'tool' %}",
  "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}",
  "{%- endif %}",
  "{%- endfor %}",
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}",
].join('');

/** Text the merges are learned from: the demo dialogue, the template's fixed text, plain English. */
function tokenizerCorpus(): string[] {
  const general = [
    'The quick brown fox jumps over the lazy dog.',
    'Hello! How are you today? I am fine, thank you.',
    'Please tell me the weather in London and in Paris.',
    'What is the time? It is half past three in the afternoon.',
    'Numbers: 0 1 2 3 4 5 6 7 8 9 10 12 24 100 1000.',
    'The function returns a JSON object with a name and arguments.',
    'get_weather location city unit celsius fahrenheit temperature',
    '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}',
  ];
  // Every message of the demo data with its role, as often as training will see them, so the
  // frequent words of the demo (and the role names after <|im_start|>) become single tokens.
  const { train, valid } = demoExamples();
  const dialogue = [...train, ...valid].flatMap((example) =>
    example.messages.flatMap((message) => [message.role, message.content]),
  );
  return [TOOLS_PREAMBLE, TOOLS_POSTAMBLE, 'tool', ...general, ...dialogue];
}

function randomNormal(rng: SeededRandom, shape: number[], std: number): HostTensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.nextNormal() * std;
  return { shape, data };
}

function ones(n: number): HostTensor {
  return { shape: [n], data: new Float32Array(n).fill(1) };
}

/** Llama's initialisation (N(0, initializer_range) for every matrix, ones for the norms), but for the head. */
function initialWeights(vocabSize: number, initializerRange: number): Map<string, HostTensor> {
  const { hiddenSize: h, intermediateSize: m, numLayers, numHeads, numKvHeads } = ARCHITECTURE;
  const headDim = h / numHeads;
  const rng = new SeededRandom(SEED);
  const weights = new Map<string, HostTensor>();
  const normal = (shape: number[]) => randomNormal(rng, shape, initializerRange);
  weights.set('model.embed_tokens.weight', normal([vocabSize, h]));
  for (let i = 0; i < numLayers; i++) {
    const p = `model.layers.${i}`;
    weights.set(`${p}.input_layernorm.weight`, ones(h));
    weights.set(`${p}.self_attn.q_proj.weight`, normal([numHeads * headDim, h]));
    weights.set(`${p}.self_attn.k_proj.weight`, normal([numKvHeads * headDim, h]));
    weights.set(`${p}.self_attn.v_proj.weight`, normal([numKvHeads * headDim, h]));
    weights.set(`${p}.self_attn.o_proj.weight`, normal([h, numHeads * headDim]));
    weights.set(`${p}.post_attention_layernorm.weight`, ones(h));
    weights.set(`${p}.mlp.gate_proj.weight`, normal([m, h]));
    weights.set(`${p}.mlp.up_proj.weight`, normal([m, h]));
    weights.set(`${p}.mlp.down_proj.weight`, normal([h, m]));
  }
  weights.set('model.norm.weight', ones(h));
  // The output head gets N(0, 1/√h) instead: hidden states leave the final RMSNorm with norm ≈ √h,
  // so with std 0.02 the largest logit a frozen head can produce is ≈ 0.02·h ≈ 2.6, and a LoRA on
  // this random base could never put more than a few percent probability on any token. With 1/√h
  // it can reach logits ≈ √h ≈ 11, and the demo's training loss falls from about 7 to about 2.6 within five epochs.
  weights.set('lm_head.weight', randomNormal(rng, [vocabSize, h], 1 / Math.sqrt(h)));
  return weights;
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + '\n');
}

/** Write the model folder to `dir`; the samples are written only by the command-line run. */
export function makeTinyModel(dir = MODEL_DIR): string {
  mkdirSync(dir, { recursive: true });

  const bpe = trainByteLevelBpe(tokenizerCorpus(), BPE_VOCAB_SIZE);
  const tokenizerJson = byteLevelTokenizerJson(bpe, ADDED_TOKENS);
  const idOf = (content: string) => Object.keys(bpe.vocab).length + ADDED_TOKENS.findIndex((t) => t.content === content);
  const tokenCount = Object.keys(bpe.vocab).length + ADDED_TOKENS.length;
  // Rounded up to a multiple of 64, as released models pad theirs: the extra rows are never produced.
  const vocabSize = Math.ceil(tokenCount / 64) * 64;
  const endOfText = idOf('<|endoftext|>');
  const imEnd = idOf('<|im_end|>');
  writeJson(join(dir, 'tokenizer.json'), tokenizerJson);

  const addedTokensDecoder: Record<string, object> = {};
  ADDED_TOKENS.forEach((token) => {
    addedTokensDecoder[String(idOf(token.content))] = {
      content: token.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: token.special,
    };
  });
  writeJson(join(dir, 'tokenizer_config.json'), {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    model_max_length: ARCHITECTURE.maxPositionEmbeddings,
    pad_token: '<|endoftext|>',
    tokenizer_class: 'PreTrainedTokenizerFast',
    unk_token: null,
  });
  writeJson(join(dir, 'special_tokens_map.json'), {
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    eos_token: '<|im_end|>',
    pad_token: '<|endoftext|>',
  });

  const initializerRange = 0.02;
  const config = {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: endOfText,
    eos_token_id: imEnd,
    head_dim: ARCHITECTURE.hiddenSize / ARCHITECTURE.numHeads,
    hidden_act: 'silu',
    hidden_size: ARCHITECTURE.hiddenSize,
    initializer_range: initializerRange,
    intermediate_size: ARCHITECTURE.intermediateSize,
    max_position_embeddings: ARCHITECTURE.maxPositionEmbeddings,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: ARCHITECTURE.numHeads,
    num_hidden_layers: ARCHITECTURE.numLayers,
    num_key_value_heads: ARCHITECTURE.numKvHeads,
    pad_token_id: endOfText,
    pretraining_tp: 1,
    rms_norm_eps: ARCHITECTURE.rmsNormEps,
    rope_scaling: null,
    rope_theta: ARCHITECTURE.ropeTheta,
    tie_word_embeddings: false,
    torch_dtype: 'float32',
    transformers_version: '4.46.0',
    use_cache: true,
    vocab_size: vocabSize,
  };
  saveHfModel(dir, config, initialWeights(vocabSize, initializerRange), 'F32');
  writeJson(join(dir, 'generation_config.json'), {
    bos_token_id: endOfText,
    eos_token_id: [imEnd, endOfText],
    pad_token_id: endOfText,
    do_sample: true,
    temperature: 0.7,
    top_p: 0.9,
    transformers_version: '4.46.0',
  });
  return `wrote ${dir}: vocab ${tokenCount} tokens (config vocab_size ${vocabSize}), ${bpe.merges.length} merges`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeDemoData(join(ROOT, 'samples'));
  console.info(makeTinyModel());
}
