// `tuneforge chat --model <id> [--system …] ["prompt"]`: streams the answer to stdout. Without a prompt
// each line of stdin is the next user turn of one conversation (a REPL when stdin is a terminal).
import readline from 'node:readline';
import type OpenAI from 'openai';
import { runCommand, type Command, type Invocation } from './command.ts';

type Message = OpenAI.Chat.ChatCompletionMessageParam;

/** Sends the conversation, streams the answer to stdout, and adds it to the conversation. */
async function answer(cli: Invocation, messages: Message[]): Promise<void> {
  const stream = await cli.client.chat.completions.create({
    model: cli.required('model'),
    messages,
    stream: true,
    ...(cli.string('max-tokens') === undefined ? {} : { max_completion_tokens: cli.number('max-tokens') }),
    ...(cli.string('temperature') === undefined ? {} : { temperature: cli.number('temperature') }),
  });
  let text = '';
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta.content ?? '';
    text += delta;
    process.stdout.write(delta);
  }
  process.stdout.write('\n');
  messages.push({ role: 'assistant', content: text });
}

export const CHAT: Command = {
  usage: '--model <model> [--system TEXT] [--max-tokens N] [--temperature T] ["prompt"]',
  describe: 'chat with a model; without a prompt, each line of stdin is the next turn',
  options: { model: { type: 'string' }, system: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' } },
  run: async (cli) => {
    cli.required('model');
    const system = cli.string('system');
    const messages: Message[] = system === undefined ? [] : [{ role: 'system', content: system }];
    const prompt = cli.positionals.join(' ');
    if (prompt) {
      messages.push({ role: 'user', content: prompt });
      return answer(cli, messages);
    }
    const interactive = Boolean(process.stdin.isTTY);
    const lines = readline.createInterface({ input: process.stdin, output: interactive ? process.stdout : undefined });
    if (interactive) lines.setPrompt('> ');
    lines.prompt();
    for await (const line of lines) {
      if (line.trim()) {
        messages.push({ role: 'user', content: line });
        await answer(cli, messages);
      }
      lines.prompt();
    }
  },
};

export const runChat = (args: string[]) => runCommand('chat', CHAT, args);
